"""ServedBaseline executor on fake serving directories, and push.py's readers."""

import datetime
import json
import os
import uuid

import pytest
import tensorflow as tf
from tfx import types
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components import artifacts
from components.pusher import push
from components.served_baseline import component
from components.served_baseline import executor
from models import export

UTC = datetime.timezone.utc
DAY = datetime.timedelta(days=1)
T = datetime.datetime(2026, 2, 10, tzinfo=UTC)


def write_version(base, t, model, warm_start=None, complete=True, recipe=None):
  """A version as the pusher leaves it (through tf.io.gfile, so ram:// works)."""
  name = push.version_name(t, model)
  path = push.version_path(base, name)
  tf.io.gfile.makedirs(path)
  with tf.io.gfile.GFile(os.path.join(path, push.MODEL_FILE), 'wb') as f:
    f.write(model)
  metadata = {'version': name, 'snapshot_time': t.isoformat()}
  if recipe is not None:
    metadata[push.RECIPE_FINGERPRINT] = recipe
  with tf.io.gfile.GFile(os.path.join(path, push.METADATA_FILE), 'w') as f:
    json.dump(metadata, f)
  if warm_start is not None:
    tf.io.gfile.makedirs(os.path.join(path, os.path.dirname(export.WARM_START_FILE)))
    with tf.io.gfile.GFile(os.path.join(path, export.WARM_START_FILE), 'wb') as f:
      f.write(warm_start)
  if complete:
    with tf.io.gfile.GFile(os.path.join(path, push.MARKER), 'w') as f:
      f.write('done')
  return name


def run(serving_dir, root, t=T, eval_start=T - DAY, bootstrap=0, force=0):
  """Runs the executor; returns (the baseline output list, the result)."""
  root = os.path.join(str(root), uuid.uuid4().hex[:8])
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(root, 'examples')
  examples.set_string_custom_property(artifacts.SNAPSHOT_TIME, t.isoformat())
  examples.set_string_custom_property(artifacts.EVAL_START, eval_start.isoformat())
  baseline = standard_artifacts.Model()
  baseline.uri = os.path.join(root, 'baseline')
  result = artifacts.GateResult()
  result.uri = os.path.join(root, 'result')
  outputs = {executor.BASELINE_KEY: [baseline], executor.RESULT_KEY: [result]}
  executor.Executor().Do(
      {executor.EXAMPLES_KEY: [examples]}, outputs,
      {executor.SERVING_DIR_KEY: str(serving_dir), executor.BOOTSTRAP_KEY: bootstrap,
       executor.FORCE_KEY: force})
  return outputs[executor.BASELINE_KEY], result


def read(path):
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def tflite_bytes(baseline):
  return read(os.path.join(path_utils.serving_model_path(baseline.uri), 'tflite'))


def warm_start_file(baseline):
  """Where the student's warm start looks, given the Trainer's base_model path."""
  return export.warm_start_weights(path_utils.serving_model_path(baseline.uri))


def normal_night(serving, root):
  write_version(serving, T - 2 * DAY, b'model-2', warm_start=b'warm-2')
  want = write_version(serving, T - DAY, b'model-1', warm_start=b'warm-1')
  baselines, result = run(serving, root)
  assert len(baselines) == 1
  baseline = baselines[0]
  assert tflite_bytes(baseline) == b'model-1'
  assert read(warm_start_file(baseline)) == b'warm-1'
  assert baseline.get_string_custom_property('served_version') == want
  assert baseline.get_string_custom_property('served_path') == push.version_path(
      serving, want)
  assert baseline.get_string_custom_property('snapshot_time') == (T - DAY).isoformat()
  assert result.get_string_custom_property('baseline_version') == want
  assert result.get_string_custom_property('baseline_model') == baseline.uri
  assert result.get_string_custom_property('newest_version') == want
  assert result.get_int_custom_property('backfill') == 0
  assert result.get_int_custom_property('already_served') == 0
  assert result.get_int_custom_property('bootstrap') == 0
  assert result.get_int_custom_property('passed') == 1
  assert want in result.get_string_custom_property('reason')


def test_a_normal_night_takes_the_version_served_at_the_eval_start(tmp_path):
  normal_night(str(tmp_path / 'serving'), tmp_path)


def test_through_tf_io_gfile_on_a_non_local_filesystem(tmp_path):
  serving = f'ram://served_baseline_{uuid.uuid4().hex}/serving'
  tf.io.gfile.makedirs(serving)
  assert tf.io.gfile.isdir(serving) and not os.path.exists(serving)
  normal_night(serving, tmp_path)


def test_unmarked_and_temporary_versions_are_never_taken(tmp_path):
  serving = str(tmp_path / 'serving')
  good = write_version(serving, T - 2 * DAY, b'model-2')
  write_version(serving, T - DAY, b'model-1', warm_start=b'warm-1', complete=False)
  # A temporary dir, even with files and a marker, is not a version.
  tmp = os.path.join(serving, f'{push.TMP_PREFIX}{push.version_name(T - DAY, b"x")}-ab')
  os.makedirs(tmp)
  for name in (push.MODEL_FILE, push.MARKER):
    with open(os.path.join(tmp, name), 'wb') as f:
      f.write(b'x')
  (baseline,), result = run(serving, tmp_path)
  assert tflite_bytes(baseline) == b'model-2'
  assert result.get_string_custom_property('baseline_version') == good
  assert result.get_string_custom_property('newest_version') == good
  # That version pushed no warm-start weights: nothing is made up.
  assert not os.path.exists(warm_start_file(baseline))


def test_a_backfill_takes_the_version_as_of_its_eval_start(tmp_path):
  serving = str(tmp_path / 'serving')
  t0 = T - 5 * DAY
  old = write_version(serving, t0, b'model-t0')
  new = write_version(serving, t0 + 2 * DAY, b'model-t0+2')
  (baseline,), result = run(serving, tmp_path, t=t0 + DAY, eval_start=t0)
  assert tflite_bytes(baseline) == b'model-t0'
  assert result.get_string_custom_property('baseline_version') == old
  assert result.get_int_custom_property('backfill') == 1
  assert result.get_string_custom_property('newest_version') == new
  assert f'a backfill: {new} is newer' in result.get_string_custom_property('reason')


def test_an_already_served_night_is_recorded_unless_forced(tmp_path):
  serving = str(tmp_path / 'serving')
  before = write_version(serving, T - DAY, b'model-1')
  served = write_version(serving, T, b'model-0')
  (baseline,), result = run(serving, tmp_path)
  # The baseline is still emitted (a Vertex task resolves its inputs before its
  # trigger condition skips it); nothing downstream runs.
  assert tflite_bytes(baseline) == b'model-1'
  assert result.get_int_custom_property('already_served') == 1
  assert result.get_string_custom_property('served_version') == served
  assert result.get_int_custom_property('passed') == 1
  reason = result.get_string_custom_property('reason')
  assert served in reason and '--force' in reason

  (baseline,), result = run(serving, tmp_path, force=1)
  assert result.get_int_custom_property('already_served') == 0
  assert result.get_string_custom_property('baseline_version') == before
  assert tflite_bytes(baseline) == b'model-1'


def test_no_baseline_without_bootstrap_stops_the_run(tmp_path):
  serving = str(tmp_path / 'serving')
  with pytest.raises(executor.BaselineMissingError) as e:
    run(serving, tmp_path)
  message = str(e.value)
  assert serving in message and (T - DAY).isoformat() in message
  assert 'no complete version' in message and 'make bootstrap' in message

  write_version(serving, T - DAY / 2, b'model-half')  # after the eval start
  write_version(serving, T - 2 * DAY, b'unmarked', complete=False)
  with pytest.raises(executor.BaselineMissingError) as e:
    run(serving, tmp_path)
  message = str(e.value)
  assert serving in message and (T - DAY).isoformat() in message
  assert f'oldest complete version is T={(T - DAY / 2).isoformat()}' in message
  assert 'newer than' in message


@pytest.mark.parametrize('make_dir', [False, True])
def test_a_bootstrap_without_a_served_version_has_no_baseline(tmp_path, make_dir):
  serving = tmp_path / 'serving'
  if make_dir:
    serving.mkdir()
  baselines, result = run(serving, tmp_path, bootstrap=1)
  assert baselines == []
  assert result.get_int_custom_property('passed') == 1
  assert result.get_int_custom_property('bootstrap') == 1
  assert result.get_int_custom_property('already_served') == 0
  assert result.get_string_custom_property('baseline_version') == ''
  assert result.get_string_custom_property('newest_version') == ''
  assert result.get_string_custom_property('reason') == 'bootstrap: no served version yet'


def test_version_times_and_served_as_of_boundaries(tmp_path):
  t = datetime.datetime(2026, 3, 1, 6, 30, 15, tzinfo=UTC)
  name = push.version_name(t, b'm')
  assert push.version_t(name) == t and push.version_t(name).tzinfo is not None
  assert push.t_label(push.version_t(name)) == push.t_label(t)
  with pytest.raises(ValueError):
    push.version_t('not-a-version')

  base = str(tmp_path / 'serving')
  assert push.served_as_of(base, t) is None and push.newest(base) is None
  a = write_version(base, t, b'a')
  b = write_version(base, t + DAY, b'b')
  write_version(base, t + 2 * DAY, b'c', complete=False)
  second = datetime.timedelta(seconds=1)
  assert push.served_as_of(base, t - second) is None
  assert push.served_as_of(base, t) == a  # T exactly equal counts
  assert push.served_as_of(base, t + DAY - second) == a
  assert push.served_as_of(base, t + DAY) == b
  assert push.served_as_of(base, t + 5 * DAY) == b
  assert push.served_as_of(base, (t + DAY).replace(tzinfo=None)) == b  # naive: UTC
  other_zone = datetime.timezone(datetime.timedelta(hours=2))
  assert push.served_as_of(base, (t + DAY).astimezone(other_zone)) == b
  assert push.version_at(base, t) == a
  assert push.version_at(base, t + second) is None
  assert push.version_at(base, t + 2 * DAY) is None  # unmarked
  assert push.newest(base) == b
  assert push.latest(base) == push.version_path(base, b)


def test_the_component_passes_ints_to_its_spec():
  node = component.ServedBaseline(types.Channel(type=standard_artifacts.Examples),
                                  serving_dir='gs://bucket/serving', bootstrap=True)
  assert node.exec_properties == {executor.SERVING_DIR_KEY: 'gs://bucket/serving',
                                  executor.BOOTSTRAP_KEY: 1, executor.FORCE_KEY: 0}
  assert set(node.outputs) == {executor.BASELINE_KEY, executor.RESULT_KEY}


def test_the_component_takes_a_runtime_parameter_for_force():
  force = data_types.RuntimeParameter(name='force_rerun', ptype=int, default=0)
  node = component.ServedBaseline(types.Channel(type=standard_artifacts.Examples),
                                  serving_dir='/serving', bootstrap=False, force=force)
  assert node.exec_properties[executor.FORCE_KEY] is force
  assert node.exec_properties[executor.BOOTSTRAP_KEY] == 0


def test_the_baseline_carries_the_served_recipe_fingerprint(tmp_path):
  serving = str(tmp_path / 'serving')
  write_version(serving, T - DAY, b'model-1', recipe='0123456789abcdef')
  (baseline,), _ = run(serving, tmp_path)
  assert baseline.get_string_custom_property(
      executor.RECIPE_FINGERPRINT) == '0123456789abcdef'
  # A version pushed before the Pusher recorded it: empty (the promotion step
  # then takes the recipe as changed).
  old = str(tmp_path / 'old')
  write_version(old, T - DAY, b'model-1')
  (baseline,), _ = run(old, tmp_path)
  assert baseline.get_string_custom_property(executor.RECIPE_FINGERPRINT) == ''
