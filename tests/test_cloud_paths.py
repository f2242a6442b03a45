"""Every custom executor that touches files, on a non-local file system.

TensorFlow's `ram://` stands in for gs://: tf.io.gfile reads and writes it, and
Beam does through the test-only file system in tests/gfile_beam_fs.py. A local
call (os.path, open, glob, shutil) in an executor finds nothing there and fails
here, as it would on Vertex.
"""

import json
import os
import uuid

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils
from tfx.utils import path_utils

import config as config_lib
from components import artifacts
from components.data_gate import executor as data_gate
from components.data_gate import gate
from components.pusher import executor as pusher
from components.pusher import push
from components.quantizer import convert
from components.quantizer import executor as quantizer
from components.teacher_gate import executor as teacher_gate
from models import export
from models import features as features_lib
from schemas import columns
from schemas import records
from tests import gfile_beam_fs  # pylint: disable=unused-import  (registers ram://)
from tests import helpers
from tests import test_teacher_gate
from world import synthetic


def ram_root() -> str:
  return f'ram://{uuid.uuid4().hex[:8]}'


def copy_tree(src: str, dst: str) -> None:
  """A local directory tree into any tf.io.gfile file system."""
  for root, _, names in os.walk(src):
    rel = os.path.relpath(root, src)
    target = dst if rel == '.' else f'{dst}/{rel}'
    tf.io.gfile.makedirs(target)
    for name in names:
      tf.io.gfile.copy(os.path.join(root, name), f'{target}/{name}', overwrite=True)


def test_example_gen_reads_and_writes_a_non_local_file_system(small_world, tmp_path):
  cfg, path = small_world
  root = ram_root()
  copy_tree(path, f'{root}/world')
  remote = helpers.run_example_gen(cfg, f'{root}/world', f'{root}/examples')
  local = helpers.run_example_gen(cfg, path, str(tmp_path / 'examples'))
  for split in ('train', 'eval'):
    got = records.read_examples(artifact_utils.get_split_uri([remote], split))
    want = records.read_examples(artifact_utils.get_split_uri([local], split))
    assert remote.get_int_custom_property(f'{split}_examples') == len(
        want[columns.CLICK_ID]) > 0
    order, want_order = (np.argsort(got[columns.CLICK_ID]),
                         np.argsort(want[columns.CLICK_ID]))
    for name in want:
      np.testing.assert_array_equal(got[name][order], want[name][want_order], name)
  assert remote.get_int_custom_property('conversions_joined') == (
      local.get_int_custom_property('conversions_joined'))
  assert remote.get_string_custom_property(artifacts.SNAPSHOT_TIME) == (
      local.get_string_custom_property(artifacts.SNAPSHOT_TIME))


def test_data_gate_reads_anomalies_from_a_non_local_file_system():
  root = ram_root()
  anomalies = standard_artifacts.ExampleAnomalies()
  anomalies.uri = f'{root}/anomalies'
  anomalies.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  for split in ('train', 'eval'):
    a = anomalies_pb2.Anomalies()
    if split == 'eval':
      a.anomaly_info['price'].reason.add(short_description='Out-of-range values',
                                         description='Unexpectedly low value: -3')
    io_utils.write_bytes_file(f'{root}/anomalies/Split-{split}/'
                              f'{data_gate.ANOMALIES_FILE}', a.SerializeToString())
  result = artifacts.GateResult()
  result.uri = f'{root}/result'
  with pytest.raises(gate.DataAnomaliesError, match="split 'eval'.*price"):
    data_gate.Executor().Do({data_gate.ANOMALIES_KEY: [anomalies]},
                            {data_gate.RESULT_KEY: [result]}, {})


def test_teacher_gate_reads_model_and_examples_from_a_non_local_file_system(tmp_path):
  root = ram_root()
  examples = test_teacher_gate.write_eval_split(str(tmp_path / 'examples'))
  teacher = test_teacher_gate.save_fake_teacher(str(tmp_path / 'teacher'), (1.0,) * 3)
  for artifact, name in ((examples, 'examples'), (teacher, 'teacher')):
    copy_tree(artifact.uri, f'{root}/{name}')
    artifact.uri = f'{root}/{name}'
  result = artifacts.GateResult()
  result.uri = f'{root}/result'
  teacher_gate.Executor().Do(
      {teacher_gate.MODEL_KEY: [teacher], teacher_gate.EXAMPLES_KEY: [examples]},
      {teacher_gate.RESULT_KEY: [result]},
      {teacher_gate.WINDOWS_KEY: json.dumps(synthetic.WINDOW_NAMES),
       teacher_gate.PANEL_KEY: synthetic.IN_PANEL,
       teacher_gate.BAR_KEY: config_lib.TeacherGateConfig().to_json()})
  assert result.get_int_custom_property('passed') == 1
  assert result.get_int_custom_property('eval_examples') == test_teacher_gate.EVAL_ROWS


def pusher_inputs(root, t):
  """A quantized model (TFLite and warm-start weights), a blessing, T."""
  model = standard_artifacts.Model()
  model.uri = f'{root}/model'
  io_utils.write_bytes_file(f'{root}/model/Format-Serving/tflite', b'tflite-' + t.encode())
  io_utils.write_bytes_file(f'{root}/model/{export.FLOAT_STUDENT_DIR}/'
                            f'{export.WARM_START_FILE}', b'weights')
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = f'{root}/blessing'
  blessing.set_int_custom_property('blessed', 1)
  examples = standard_artifacts.Examples()
  examples.uri = f'{root}/examples'
  examples.set_string_custom_property(artifacts.SNAPSHOT_TIME, t)
  pushed = standard_artifacts.PushedModel()
  pushed.uri = f'{root}/pushed'
  tf.io.gfile.makedirs(pushed.uri)
  return ({pusher.MODEL_KEY: [model], pusher.BLESSING_KEY: [blessing],
           pusher.EXAMPLES_KEY: [examples]}, {pusher.PUSHED_KEY: [pushed]})


def test_pusher_writes_a_complete_version_to_a_non_local_file_system():
  root = ram_root()
  serving = f'{root}/serving'
  inputs, outputs = pusher_inputs(root, '2026-02-05T00:00:00+00:00')
  pusher.Executor().Do(inputs, outputs, {pusher.PUSH_BASE_KEY: serving})
  (pushed,) = outputs[pusher.PUSHED_KEY]
  assert pushed.get_int_custom_property('pushed') == 1
  (version,) = push.complete_versions(serving)
  assert tf.io.gfile.listdir(serving) == [version]  # no temporary left
  base = f'{serving}/{version}'
  assert io_utils.read_bytes_file(f'{base}/{push.MODEL_FILE}') == (
      b'tflite-2026-02-05T00:00:00+00:00')
  assert io_utils.read_bytes_file(f'{base}/{export.WARM_START_FILE}') == b'weights'
  # Idempotent there too: the same T again pushes nothing.
  pusher.Executor().Do(inputs, outputs, {pusher.PUSH_BASE_KEY: serving})
  assert push.complete_versions(serving) == [version]


def save_fake_student(export_dir):
  """A SavedModel that looks like an exported student to the Quantizer: the
  raw-feature and serving signatures and a `tft_layer` (identity to float)."""
  names = synthetic.SERVING_FEATURES
  weights = tf.Variable(tf.fill([len(names), 1], 1e-6))
  specs = {n: tf.TensorSpec([None, 1], features_lib.dtype(synthetic.column(n)), name=n) for n in names}

  class Identity(tf.Module):
    @tf.function(input_signature=[specs])
    def __call__(self, feeds):
      return {n: tf.cast(v, tf.float32) for n, v in feeds.items()}

  module = tf.Module()
  module.tft_layer, module.weights = Identity(), weights

  def pconvs(feeds):
    x = tf.concat([tf.cast(feeds[n], tf.float32) for n in names], axis=1)
    return tf.exp(tf.matmul(x, weights) - 3.0)

  @tf.function(input_signature=[specs[n] for n in names])
  def raw(*tensors):
    return {export.PCONVS: pconvs(dict(zip(names, tensors)))}

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve(examples):
    feeds = tf.io.parse_example(examples, features_lib.raw_feature_spec(synthetic.features(names)))
    return {export.PCONVS: tf.reshape(pconvs(feeds), [-1])}

  tf.saved_model.save(module, export_dir, signatures={
      export.RAW_SIGNATURE: raw, export.SERVING_SIGNATURE: serve})


def test_quantizer_reads_and_writes_a_non_local_file_system(small_world, tmp_path):
  cfg, path = small_world
  root = ram_root()
  copy_tree(path, f'{root}/world')
  examples = helpers.run_example_gen(cfg, f'{root}/world', f'{root}/examples')
  save_fake_student(str(tmp_path / 'student'))
  student = standard_artifacts.Model()
  student.uri = f'{root}/student'
  copy_tree(str(tmp_path / 'student'), path_utils.serving_model_path(student.uri))
  out_model = standard_artifacts.Model()
  out_model.uri = f'{root}/quantized'
  report = artifacts.QuantizationReport()
  report.uri = f'{root}/report'
  q = quantizer
  q.Executor().Do(
      {q.MODEL_KEY: [student], q.EXAMPLES_KEY: [examples]},
      {q.QUANTIZED_KEY: [out_model], q.REPORT_KEY: [report]},
      {q.MODE_KEY: 'float16', q.CALIBRATION_EXAMPLES_KEY: 50,
       q.CALIBRATION_SAMPLING_KEY: 'uniform', q.MAX_NLL_INCREASE_KEY: 0.005,
       q.LATENCY_SAMPLES_KEY: 10, q.EVAL_LABEL_KEY: cfg.eval_label_spec().to_json(),
       q.SEED_KEY: 0})
  tflite = io_utils.read_bytes_file(
      f'{path_utils.serving_model_path(out_model.uri)}/tflite')
  assert convert.check(tflite, synthetic.SERVING_FEATURES, 'float16')
  assert tf.io.gfile.exists(f'{q.float_student_path(out_model.uri)}/saved_model.pb')
  written = json.loads(io_utils.read_string_file(f'{report.uri}/{q.REPORT_FILE}'))
  assert written['eval_examples'] == examples.get_int_custom_property('eval_examples')
