"""A warm start says how many layers it loaded, and fails when none matched
(Keras' load_weights(by_name=True, skip_mismatch=True) would train from scratch
with only a log line)."""

import os
import types

import numpy as np
import pytest

import config as config_lib
from models import distill
from models import export
from models import student_trainer
from models import towers
from pipeline import report
from world import synthetic


@pytest.fixture(scope='module')
def cfg():
  return config_lib.load_config(None, [])


def served(tmp_path, network):
  """A served version's layout: base_model is <artifact>/Format-Serving."""
  base = tmp_path / 'baseline' / 'Format-Serving'
  base.mkdir(parents=True)
  path = export.warm_start_weights(str(base))
  os.makedirs(os.path.dirname(path))
  network.save_weights(path, save_format='h5')
  return str(base)


def test_layer_match_is_counted_and_logged(cfg, tmp_path, monkeypatch):
  production = towers.build_student_tower(cfg)  # the bootstrap's student
  base = served(tmp_path, production)
  kd = student_trainer.build_network(cfg, distill.DistillWeights.from_config(cfg.distill),
                                     hint_width=64)
  logged = []
  # absl's handler may not reach pytest's caplog once other tests set it up.
  monkeypatch.setattr(student_trainer.logging, 'info',
                      lambda msg, *args: logged.append(msg % args))
  got = student_trainer.warm_start_from(kd, base)
  # Every layer of the production student loads; the KD-only heads do not exist there.
  assert got['layers_matched'] == 11 and got['layers_with_weights'] == 13, got
  assert set(got['skipped']) == {'aux_heads', 'hint_projection'}
  assert any('11 of 13 layers with weights matched' in line for line in logged), logged
  np.testing.assert_array_equal(kd.get_layer('dense_0').get_weights()[0],
                                production.get_layer('dense_0').get_weights()[0])
  line = report.text({'executions': [], 'warm_start': got})
  assert 'warm start: 11 of 13 layers with weights matched' in line
  assert 'aux_heads' in line


def test_nothing_matched_fails(cfg, tmp_path):
  # dense_0 and window_heads by name, but other shapes: nothing can load.
  other = towers.build_tower([synthetic.column('price')], 3, [4], 0, 8, name='other')
  base = served(tmp_path, other)
  network = towers.build_student_tower(cfg)
  with pytest.raises(student_trainer.WarmStartError, match='matched none of the 11'):
    student_trainer.warm_start_from(network, base)


def test_no_weights_trains_from_scratch_and_says_so(cfg, tmp_path):
  network = towers.build_student_tower(cfg)
  base = tmp_path / 'old' / 'Format-Serving'
  base.mkdir(parents=True)
  got = student_trainer.warm_start_from(network, str(base))
  assert got['layers_matched'] == 0 and 'no weights at' in got['reason']
  assert 'trained from scratch' in report.text({'executions': [], 'warm_start': got})
  assert student_trainer.warm_start_from(network, None) == {}


def test_run_summary_reads_the_students_warm_start_and_survives_a_failed_one(
    cfg, tmp_path, monkeypatch):
  model = types.SimpleNamespace(uri=str(tmp_path / 'student'))
  monkeypatch.setattr(report.local, 'node_executions', lambda *a: [
      {'node': 'student', 'execution_id': 1, 'state': 'FAILED', 'seconds': 1.0}])
  monkeypatch.setattr(report.local, 'node_outputs', lambda *a: {'model': [model]})
  # A student that failed wrote no summary: no warm-start line, no crash.
  assert 'warm_start' not in report.summarize(cfg)
  layers = {'path': 'w.h5', 'layers_matched': 11, 'layers_with_weights': 13,
            'skipped': ['aux_heads', 'hint_projection']}
  export.write_summary(os.path.join(model.uri, 'Format-Serving'),
                       {'warm_start': 'w.h5', 'warm_start_layers': layers})
  assert report.summarize(cfg)['warm_start'] == layers
