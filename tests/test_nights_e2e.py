"""Nightly semantics over the nights of conftest.e2e (caching off).

bootstrap (T = end - 11d) -> kd (end - 6d) -> worse (end) -> backfill (end - 7d)
-> kd again (end - 6d, already served): nights at least E = 4 days apart, so
each is gated against the version before it (served as of its eval start).
"""

import datetime
import os

import numpy as np
import pytest

from components import artifacts
from components.quantizer import executor as quantizer
from components.served_baseline import executor as served_baseline
from models import export
from pipeline import local
from schemas import columns
from schemas import records
from tests.helpers import serving_listing
from world import synthetic

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


def test_each_night_moves_t_and_the_window_with_it(e2e):
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
  end = e2e.cfg.world.start() + e2e.cfg.world.days * day
  assert ts == [end - 11 * day, end - 6 * day, end]
  window = e2e.cfg.window.days * day
  assert [t - s for s, t in zip(starts, ts)] == [window] * 3


def test_labels_of_older_clicks_mature(e2e):
  _, before = _examples(e2e, 'bootstrap')
  _, after = _examples(e2e, 'kd')
  common, i, j = np.intersect1d(before[columns.CLICK_ID], after[columns.CLICK_ID],
                                return_indices=True)
  assert len(common) > 1000
  grew = 0
  for label, exposure in zip(synthetic.LABELS, synthetic.EXPOSURES):
    assert (after[label][j] >= before[label][i]).all()  # reports only accumulate
    assert (after[exposure][j] >= before[exposure][i] - 1e-6).all()
    grew += int((after[label][j] > before[label][i]).sum())
  assert grew > 0  # conversions reported during the extra day reached old clicks


def test_student_warm_starts_from_the_served_student(e2e):
  def summary(night):
    student = e2e.artifact('student', 'model', night)
    return export.read_summary(os.path.join(student.uri, 'Format-Serving'))

  def warm_start(night):
    return summary(night)['warm_start']

  def served(night):
    """The weights the night's ServedBaseline took from the serving directory."""
    baseline = e2e.artifact('ServedBaseline', served_baseline.BASELINE_KEY, night)
    return export.warm_start_weights(os.path.join(baseline.uri, 'Format-Serving'))

  def trained(night):
    model = e2e.artifact('Quantizer', 'quantized_model', night)
    with open(os.path.join(quantizer.float_student_path(model.uri),
                           export.WARM_START_FILE), 'rb') as f:
      return f.read()

  def read(path):
    with open(path, 'rb') as f:
      return f.read()

  assert warm_start('bootstrap') == ''  # nothing served yet
  # Each night starts from the student serving serves as of its eval start.
  for night, source in (('kd', 'bootstrap'), ('worse', 'kd'),
                        ('backfill', 'bootstrap')):
    assert warm_start(night) == served(night), night
    assert read(served(night)) == trained(source), night
  # From the production bootstrap every layer but the KD heads loads.
  layers = summary('kd')['warm_start_layers']
  assert layers['layers_matched'] == layers['layers_with_weights'] - 2 > 0, layers


def test_a_push_happens_only_when_the_gate_passes(e2e):
  for night, want in (('bootstrap', 1), ('kd', 1), ('worse', 0)):
    blessing = e2e.artifact('Evaluator', 'blessing', night)
    pushed = e2e.artifact('Pusher', 'pushed_model', night)
    assert local.custom_property(blessing, 'blessed') == want, night
    assert local.custom_property(pushed, 'pushed') == want, night


def test_rerunning_a_served_night_skips_after_served_baseline(e2e):
  states = e2e.states['kd_again']
  assert states == {'ConversionLogExampleGen': 'COMPLETE',
                    'ServedBaseline': 'COMPLETE'}, states
  result = e2e.artifact('ServedBaseline', served_baseline.RESULT_KEY, 'kd_again')
  kd_version = local.custom_property(
      e2e.artifact('Pusher', 'pushed_model', 'kd'), 'pushed_version')
  assert local.custom_property(result, 'already_served') == 1
  assert local.custom_property(result, 'served_version') == kd_version
  assert e2e.serving['kd_again'] == e2e.serving['backfill']
  assert serving_listing(e2e.paths.serving_dir) == e2e.serving['backfill']
  summary = e2e.summaries['kd_again']
  assert 'already served' in summary and '--force' in summary
