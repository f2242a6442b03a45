"""Nightly semantics over consecutive nights (conftest.e2e, caching off).

bootstrap (T = end - 2d) -> kd (end - 1d) -> worse (end) -> kd again (end - 1d).
"""

import datetime
import os

import numpy as np
import pytest

from components import artifacts
from components.pusher import push
from components.quantizer import executor as quantizer
from models import export
from pipeline import local
from schemas import columns
from schemas import records
from tests.helpers import serving_listing

pytestmark = pytest.mark.e2e

NIGHTS = ('bootstrap', 'kd', 'worse')


def _examples(e2e, night):
  artifact = e2e.artifact('ConversionLogExampleGen', 'examples', night)
  rows = [records.read_examples(os.path.join(artifact.uri, f'Split-{s}'))
          for s in ('train', 'eval')]
  return artifact, {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _t(artifact):
  return datetime.datetime.fromisoformat(
      local.custom_property(artifact, artifacts.SNAPSHOT_TIME))


def test_each_night_moves_t_and_the_window_by_a_day(e2e):
  ts, starts = [], []
  for night in NIGHTS:
    artifact, rows = _examples(e2e, night)
    t = _t(artifact)
    ts.append(t)
    starts.append(datetime.datetime.fromisoformat(
        local.custom_property(artifact, artifacts.WINDOW_START)))
    assert (rows[columns.SNAPSHOT_TS] == int(t.timestamp())).all()
    assert rows[columns.CLICK_TS].min() >= starts[-1].timestamp()
    assert rows[columns.CLICK_TS].max() < t.timestamp()
  day = datetime.timedelta(days=1)
  assert ts[1] - ts[0] == day and ts[2] - ts[1] == day
  assert starts[1] - starts[0] == day and starts[2] - starts[1] == day


def test_labels_of_older_clicks_mature(e2e):
  _, before = _examples(e2e, 'bootstrap')
  _, after = _examples(e2e, 'kd')
  common, i, j = np.intersect1d(before[columns.CLICK_ID], after[columns.CLICK_ID],
                                return_indices=True)
  assert len(common) > 1000
  grew = 0
  for label, exposure in zip(columns.LABELS, columns.EXPOSURES):
    assert (after[label][j] >= before[label][i]).all()  # reports only accumulate
    assert (after[exposure][j] >= before[exposure][i] - 1e-6).all()
    grew += int((after[label][j] > before[label][i]).sum())
  assert grew > 0  # conversions reported during the extra day reached old clicks


def test_student_warm_starts_from_the_previous_blessed_student(e2e):
  def warm_start(night):
    student = e2e.artifact('student', 'model', night)
    return export.read_summary(os.path.join(student.uri, 'Format-Serving'))['warm_start']

  def weights(night):
    model = e2e.artifact('Quantizer', 'quantized_model', night)
    return os.path.join(quantizer.float_student_path(model.uri), export.WARM_START_FILE)

  assert warm_start('bootstrap') == ''  # nothing blessed yet
  assert warm_start('kd') == weights('bootstrap') and os.path.exists(weights('bootstrap'))
  # The worse night starts from the distilled model, the latest blessed one.
  assert warm_start('worse') == weights('kd')
  # Re-running the distilled night starts from the same, still latest, model.
  assert warm_start('kd_again') == weights('kd')


def test_a_push_happens_only_when_the_gate_passes(e2e):
  for night, want in (('bootstrap', 1), ('kd', 1), ('worse', 0)):
    blessing = e2e.artifact('Evaluator', 'blessing', night)
    pushed = e2e.artifact('Pusher', 'pushed_model', night)
    assert local.custom_property(blessing, 'blessed') == want, night
    assert local.custom_property(pushed, 'pushed') == want, night


def test_rerunning_a_night_leaves_the_serving_directory_unchanged(e2e):
  assert e2e.states['kd_again']['Pusher'] == 'COMPLETE'
  pushed = e2e.artifact('Pusher', 'pushed_model', 'kd_again')
  assert local.custom_property(pushed, 'pushed') == 0
  assert e2e.serving['kd_again'] == e2e.serving['kd']
  assert serving_listing(e2e.paths.serving_dir) == e2e.serving['kd']
  assert len(push.complete_versions(e2e.paths.serving_dir)) == 2
