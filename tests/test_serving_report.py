"""The serving benchmark's targets and tables from its JSON (bench/serving_report.py):
the ops target from the recorded op counts, never from a constant."""

import copy
import json
import os

import pytest

from bench import serving_report
from tests import helpers


@pytest.fixture(scope='module')
def reported():
  with open(os.path.join(helpers.ROOT, 'bench', 'reported', 'serving.json')) as f:
    return json.load(f)


def test_targets_recomputed_equal_the_recorded_ones_but_the_ops_before(reported):
  got = serving_report.targets(reported)
  stored = reported['targets']
  for key in stored:
    if key in ('ops_before', 'ops_reduction', 'met'):
      continue
    assert got[key] == stored[key], key
  assert got['ops_after'] == reported['models'][serving_report.INT8]['op_count']
  assert {k: v for k, v in got['met'].items() if k != 'ops'} == {
      k: v for k, v in stored['met'].items() if k != 'ops'}


def test_ops_before_not_recorded_is_said_not_invented(reported):
  assert serving_report.PER_FEATURE not in reported  # written before it was measured
  t = serving_report.targets(reported)
  assert t['ops_before'] is None and t['ops_reduction'] is None and t['met']['ops'] is None
  text = serving_report.markdown(reported)
  assert ("fewer ops: 22 ops; the per-feature graph's count not recorded in this "
          'result (not checked).') in text


def test_ops_before_from_the_recorded_per_feature_graph(reported):
  result = copy.deepcopy(reported)
  result[serving_report.PER_FEATURE] = {'ops': {}, 'op_count': 91, 'bytes': 1}
  t = serving_report.targets(result)
  assert (t['ops_before'], t['ops_after']) == (91, 22) and t['met']['ops']
  assert '>= 3x fewer ops: 91 -> 22 (4.1x, met).' in serving_report.markdown(result)
  result[serving_report.PER_FEATURE] = {'not_recorded': 'ConverterError: ...'}
  assert serving_report.targets(result)['ops_before'] is None
