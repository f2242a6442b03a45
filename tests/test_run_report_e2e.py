"""End-to-end: the run report of a fixture night in headless Chromium, each
plot's data checked against ML Metadata; the nights' console lines.

Reuses the shared nights (conftest.e2e): nothing here runs the pipeline.
"""

import json
import os
import re
import time

import numpy as np
import pytest
import tensorflow_model_analysis as tfma

from components.promotion import figures as figures_lib
from pipeline import evaluation
from pipeline import local
from pipeline import report
from pipeline import run_report
from tests import browser

pytestmark = pytest.mark.e2e

# The report's night: distilled student gated against the served kd model, with
# two versions pushed before it (bootstrap, kd) to backtest.
NIGHT = 'worse'


def run_of(e2e, night):
  """The pipeline run (ML Metadata) that holds `night`'s executions."""
  ids = set(e2e.nights[night].values())
  (run,) = [r for r in local.pipeline_runs(e2e.paths.metadata, e2e.cfg.pipeline_name)
            if ids & {x['execution_id'] for x in r['executions']}]
  return run


def tfma_values(uri, metric):
  """{slice name: {candidate|baseline: value}} read with TFMA directly."""
  out = {}
  for per_slice in tfma.load_metrics(uri):
    key = tuple((s.column, getattr(s, s.WhichOneof('kind')))
                for s in per_slice.slice_key.single_slice_keys)
    for kv in per_slice.metric_keys_and_values:
      if kv.key.name == metric and not kv.key.is_diff:
        out.setdefault(figures_lib.slice_name(key), {})[
            kv.key.model_name] = kv.value.double_value.value
  return out


@pytest.fixture(scope='module')
def built(e2e):
  run = run_of(e2e, NIGHT)
  start = time.time()
  path = run_report.build(e2e.cfg, run['run_id'])
  seconds = time.time() - start
  data = {}
  for name in run_report.PLOTS:
    with open(os.path.join(os.path.dirname(path), f'{name}.json')) as f:
      data[name] = json.load(f)
  return run, path, data, seconds


def test_every_plot_loads_in_headless_chromium(built):
  _, path, _, seconds = built
  assert seconds < 60, seconds
  plots = browser.loaded_plots(path)  # no browser: FileNotFoundError, a failure
  assert [p['plot'] for p in plots] == list(run_report.PLOTS)
  for p in plots:
    assert p['complete'] and p['width'] > 100 and p['height'] > 100, p


def test_each_plots_data_matches_ml_metadata(e2e, built):
  run, _, data, _ = built
  evaluation_uri = e2e.artifact('Evaluator', 'evaluation', NIGHT).uri

  # Loss by slice: every slice TFMA wrote, both models, with an interval.
  losses = tfma_values(evaluation_uri, evaluation.GATE_METRIC)
  assert set(data['loss_by_slice']['slices']) == set(losses)
  for name, roles in data['loss_by_slice']['slices'].items():
    for role in (evaluation.CANDIDATE, evaluation.BASELINE):
      e = roles[role]
      assert e['value'] == pytest.approx(losses[name][role], rel=1e-9, nan_ok=True)
      if np.isfinite(e['value']):
        assert e['lower'] <= e['value'] <= e['upper']
  gate = report.gate_metrics(evaluation_uri)  # the summary's own reading
  assert data['loss_by_slice']['slices']['overall'][evaluation.CANDIDATE]['value'] == \
      pytest.approx(gate['overall'][evaluation.CANDIDATE])

  # Spend by tCPA bucket: the SpendProxy ratio of every bucket TFMA has.
  spend = tfma_values(evaluation_uri, run_report.SPEND_RATIO)
  for bucket, roles in data['spend_by_tcpa']['buckets'].items():
    for role, e in roles.items():
      assert e['value'] == pytest.approx(spend[f'tcpa_bucket={bucket}'][role],
                                         rel=1e-9, nan_ok=True)
  assert data['spend_by_tcpa']['buckets']

  # Calibration by decile: the same examples and overall ratio as the
  # Evaluator's PoissonLogLoss calibration (TFLite predictions, TFMA's sums).
  deciles = data['calibration_deciles']
  examples = tfma_values(evaluation_uri, f'{evaluation.GATE_METRIC}_examples')
  assert sum(d['examples'] for d in deciles['deciles']) == deciles['examples'] == \
      examples['overall'][evaluation.CANDIDATE]
  calibration = tfma_values(evaluation_uri, run_report.CALIBRATION)['overall']
  for role in (evaluation.CANDIDATE, evaluation.BASELINE):
    assert deciles['overall'][role] == pytest.approx(calibration[role], rel=1e-4)
  means = [d['candidate_mean'] for d in deciles['deciles']]
  assert means == sorted(means)

  # INT8 vs float: the Quantizer's properties in ML Metadata.
  quantized = e2e.artifact('Quantizer', 'quantized_model', NIGHT)
  int8 = data['int8_vs_float']
  assert int8['bytes'][int8['mode']] == local.custom_property(quantized,
                                                              'quantized_bytes')
  for key in ('size_ratio', 'nll_relative_change'):
    # ML Metadata's SQLite store keeps a double property to 6 decimal places.
    assert int8[key] == pytest.approx(local.custom_property(quantized, key),
                                      rel=1e-6, abs=1e-6)
  assert int8['bytes']['float32'] > int8['bytes'][int8['mode']]

  # Wall time: the run's executions.
  assert data['wall_time']['nodes'] == [
      {k: e[k] for k in ('node', 'state', 'seconds', 'execution_id')}
      for e in run['executions']]

  # History: every night up to this one, its gate loss and its push.
  nights = {n['run_id']: n for n in data['history']['nights']}
  assert list(nights)[-1] == run['run_id']
  for name in ('bootstrap', 'kd', NIGHT):
    night = nights[run_of(e2e, name)['run_id']]
    uri = e2e.artifact('Evaluator', 'evaluation', name).uri
    assert night['loss_candidate'] == pytest.approx(
        report.gate_metrics(uri)['overall'][evaluation.CANDIDATE])
    pushed = e2e.artifact('Pusher', 'pushed_model', name)
    assert night['pushed_version'] == (
        local.custom_property(pushed, 'pushed_version')
        if local.custom_property(pushed, 'pushed') else None)
  assert nights[run['run_id']]['pushed_version'] is None  # not blessed, not pushed

  # Backtests: the two versions pushed before this night, scored at push time,
  # on matured labels and against the truth; the gate saw the pushed-time loss.
  tests = data['history']['backtests']
  versions = [nights[run_of(e2e, n)['run_id']]['pushed_version']
              for n in ('bootstrap', 'kd')]
  assert [t['version'] for t in tests] == versions
  for t in tests:
    # Tonight's window holds the clicks it still covers: all of the kd
    # version's eval days, the last three of the bootstrap's four (the nights
    # are E = 4 days apart and the window is 14 days).
    assert 0 < t['clicks_found_tonight'] <= t['clicks']
    # Exposures only grow: where tonight's window still holds every click,
    # tonight scores every click scored at push, or more.
    assert t['matured']['examples'] > 0 and t['pushed_time']['examples'] > 0
    if t['clicks_found_tonight'] == t['clicks']:
      assert t['matured']['examples'] >= t['pushed_time']['examples']
    for key in ('pushed_time', 'matured', 'truth'):
      assert np.isfinite(t[key]['nll'])
  assert tests[1]['clicks_found_tonight'] == tests[1]['clicks']
  assert tests[0]['clicks_found_tonight'] < tests[0]['clicks']
  # Labels only mature: tonight sees at least the conversions seen at push.
  assert any(t['matured']['nll'] != t['pushed_time']['nll'] for t in tests)


def test_each_night_prints_two_lines_per_component_naming_every_one(e2e):
  nodes = list(e2e.nights['kd'])  # the whole DAG ran on this night
  assert len(nodes) == 16  # every node of the nightly DAG, SweepLookup included
  print(e2e.consoles['kd'])  # shown with -rP
  lines = e2e.consoles['kd'].splitlines()
  # Every line is a component's; every component has two (start, end).
  assert {l.split()[0] for l in lines} == set(nodes), lines
  for node in nodes:
    mine = [l for l in lines if l.split()[0] == node]
    assert len(mine) == 2 and mine[0] == f'{node} started', mine
    assert mine[1].startswith(f'{node} COMPLETE '), mine
  kd = e2e.consoles['kd']
  assert 'Quantizer COMPLETE' in kd and 'bytes' in kd
  assert re.search(r'student COMPLETE [0-9.]+s: 300 steps \(76,800 examples seen\), '
                   r'final loss [0-9.]+', kd), kd
  assert 'Pusher COMPLETE' in kd and 'pushed 2' in kd
  # The night already served: what runs after ServedBaseline is skipped, in
  # one line each.
  again = e2e.consoles['kd_again'].splitlines()
  assert {l.split()[0] for l in again} <= set(nodes)
  skipped = [n for n in nodes if n not in e2e.nights['kd_again']]
  assert skipped, e2e.nights['kd_again']
  for node in nodes:
    mine = [l for l in again if l.split()[0] == node]
    if node in skipped:  # exactly its one line, with the reason
      assert len(mine) == 1 and mine[0].startswith(f'{node} SKIPPED ') and mine[
          0].endswith(': its condition is false on this night'), mine
    else:
      assert len(mine) <= 2, mine
  assert [l.split()[:2] for l in again[:4]] == [
      ['ConversionLogExampleGen', 'started'], ['ConversionLogExampleGen', 'COMPLETE'],
      ['ServedBaseline', 'started'], ['ServedBaseline', 'COMPLETE']]
