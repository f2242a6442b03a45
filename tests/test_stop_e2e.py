"""Runs that must stop before anything trains: bad logs at the ExampleGen, a
schema violation in the joined examples at the DataGate, no baseline at
ServedBaseline."""

import glob
import os

import numpy as np
import pytest

import config as config_lib
from pipeline import local
from schemas import columns
from schemas import records
from tests import helpers
from world import synthetic

pytestmark = pytest.mark.e2e


SMALL_WORLD = ['world.num_clicks=6000', 'world.days=10', 'window.days=7',
               'beam.direct_running_mode=in_memory', 'model.teacher.train_steps=10']


def run_paths(tmp_path):
  return [f'paths.data_root={tmp_path}/world', f'paths.output_root={tmp_path}/out',
          f'paths.serving_dir={tmp_path}/serving']


def small_world(tmp_path):
  """A 6k-click world generated under tmp_path; returns its config."""
  cfg, _ = helpers.make_world(tmp_path, SMALL_WORLD + run_paths(tmp_path))
  return cfg


def states_of(cfg):
  return {row['node']: row['state']
          for row in local.node_executions(local.LocalPaths.from_config(cfg).metadata,
                                           cfg.pipeline_name)}


def test_a_truncated_click_file_stops_the_run_at_the_example_gen(tmp_path):
  cfg = small_world(tmp_path)
  (path,) = glob.glob(os.path.join(cfg.paths.data_root, 'clicks', 'date=2026-01-06',
                                   '*.gz'))
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:len(data) // 2])

  with pytest.raises(Exception) as e:
    local.run(cfg, bootstrap=True)
  assert f'{path}: truncated gzip TFRecord file' in str(e.value) or (
      f'{path}: corrupt gzip data' in str(e.value)), str(e.value)[:2000]
  assert states_of(cfg) == {'ConversionLogExampleGen': 'FAILED'}
  assert not os.path.exists(cfg.paths.serving_dir)


def test_planted_violation_stops_the_run_before_transform(tmp_path):
  # The ExampleGen checks the logs' rows against the schema, so what reaches
  # the DataGate is a violation of the joined columns: clicks from a browser
  # the run's observability model does not know get a NaN observed_fraction.
  world_cfg = small_world(tmp_path)
  cfg = config_lib.load_config(None, SMALL_WORLD + run_paths(tmp_path) + [
      'observability.browsers=[{id: 0, name: chrome, observed_fraction: 1.0}, '
      '{id: 1, name: android_webview, observed_fraction: 0.9}, '
      '{id: 2, name: safari, observed_fraction: 0.3}, '
      '{id: 3, name: firefox, observed_fraction: 0.6}]',
      'world.browser_shares_desktop=[0.6, 0.0, 0.2, 0.2]',
      'world.browser_shares_mobile=[0.4, 0.15, 0.45, 0.0]'])
  assert world_cfg.paths.data_root == cfg.paths.data_root

  with pytest.raises(Exception) as e:
    local.run(cfg, bootstrap=True)  # no baseline is needed; the data fails
  assert 'DataGate' in str(e.value) and 'observed_fraction' in str(e.value), (
      str(e.value)[:2000])

  states = states_of(cfg)
  assert states['ExampleValidator'] == 'COMPLETE'
  assert states['DataGate'] == 'FAILED'
  for node in ('Transform', 'teacher', 'TeacherGate', 'BulkInferrer', 'student'):
    assert node not in states, states
  # The violation made it through the ExampleGen untouched, for the gate to see.
  eg = local.node_outputs(local.LocalPaths.from_config(cfg).metadata,
                          cfg.pipeline_name, 'ConversionLogExampleGen')['examples'][0]
  rows = records.read_examples(os.path.join(eg.uri, 'Split-train'))
  unknown = rows[synthetic.BROWSER] == 4
  assert unknown.any() and np.isnan(rows[columns.OBSERVED_FRACTION][unknown]).all()
  assert not os.path.exists(cfg.paths.serving_dir)


def test_a_distilled_run_without_a_baseline_stops_with_the_bootstrap_message(tmp_path):
  cfg = small_world(tmp_path)
  with pytest.raises(Exception) as e:
    local.run(cfg)
  assert 'bootstrap' in str(e.value) and 'no served baseline' in str(e.value)
  assert cfg.paths.serving_dir in str(e.value)
  states = states_of(cfg)
  assert states['ServedBaseline'] == 'FAILED'
  for node in ('Transform', 'teacher', 'student', 'Evaluator', 'Pusher'):
    assert node not in states, states
  assert not os.path.exists(cfg.paths.serving_dir)
