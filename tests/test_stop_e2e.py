"""A window with a schema violation stops at the DataGate; nothing trains."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from pipeline import local
from schemas import codec
from schemas import records
from tests import helpers

pytestmark = pytest.mark.e2e


def plant_negative_prices(partition_dir, rows=3):
  """Rewrites one click partition with a few negative prices (a schema violation)."""
  (path,) = glob.glob(os.path.join(partition_dir, '*.gz'))
  cols = records.read_examples(path)
  cols['price'][:rows] = -5.0
  with tf.io.TFRecordWriter(path, options='GZIP') as w:
    for record in codec.encode(cols):
      w.write(record)


def small_world(tmp_path):
  """A 6k-click world generated under tmp_path; returns its config."""
  cfg, _ = helpers.make_world(tmp_path, [
      'world.num_clicks=6000', 'world.days=10', 'window.days=7',
      'beam.direct_running_mode=in_memory', 'model.teacher.train_steps=10',
      f'paths.data_root={tmp_path}/world', f'paths.output_root={tmp_path}/out',
      f'paths.serving_dir={tmp_path}/serving'])
  return cfg


def test_planted_violation_stops_the_run_before_transform(tmp_path):
  cfg = small_world(tmp_path)
  plant_negative_prices(os.path.join(cfg.paths.data_root, 'clicks', 'date=2026-01-06'))

  with pytest.raises(Exception) as e:
    local.run(cfg, bootstrap=True)  # no baseline is needed; the data fails
  assert 'DataGate' in str(e.value) and 'price' in str(e.value), str(e.value)[:2000]
  assert 'Out-of-range' in str(e.value) or 'low value' in str(e.value)

  states = {row['node']: row['state']
            for row in local.node_executions(local.LocalPaths.from_config(cfg).metadata,
                                             cfg.pipeline_name)}
  assert states['ExampleValidator'] == 'COMPLETE'
  assert states['DataGate'] == 'FAILED'
  for node in ('Transform', 'teacher', 'TeacherGate', 'BulkInferrer', 'student'):
    assert node not in states, states
  # The violation made it through the ExampleGen untouched, for the gate to see.
  eg = local.node_outputs(local.LocalPaths.from_config(cfg).metadata,
                          cfg.pipeline_name, 'ConversionLogExampleGen')['examples'][0]
  rows = records.read_examples(os.path.join(eg.uri, 'Split-train'))
  assert (rows['price'] < 0).sum() == 3
  assert np.isfinite(rows['price']).all()


def test_a_distilled_run_without_a_baseline_stops_with_the_bootstrap_message(tmp_path):
  cfg = small_world(tmp_path)
  with pytest.raises(Exception) as e:
    local.run(cfg)
  assert 'bootstrap' in str(e.value) and 'no served baseline' in str(e.value)
  assert cfg.paths.serving_dir in str(e.value)
  states = {row['node']: row['state']
            for row in local.node_executions(local.LocalPaths.from_config(cfg).metadata,
                                             cfg.pipeline_name)}
  assert states['ServedBaseline'] == 'FAILED'
  for node in ('Transform', 'teacher', 'student', 'Evaluator', 'Pusher'):
    assert node not in states, states
  assert not os.path.exists(cfg.paths.serving_dir)
