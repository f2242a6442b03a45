"""Pruning the student (models/pruning.py): the configured sparsity reaches the
exported weights, the export converts to builtin-ops INT8 that TFMA runs as the
interpreter does, and the warm-start weights load into an unpruned student."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from components.quantizer import convert
from models import distill
from models import export
from models import features as features_lib
from models import losses
from models import pruning
from models import student_trainer
from models import towers
from schemas import codec
from schemas import columns
from tests import helpers
from tests import test_serving_graph as lean
from world import synthetic

NAMES = synthetic.SERVING_FEATURES
SPARSITY = 0.5
STEPS = 40


def test_schedule_reaches_the_target_on_tf_mots_update_grid():
  cfg = config_lib.load_config(None, ['pruning.enabled=true']).pruning
  sched = pruning.schedule(cfg, 2000)
  got = sched.get_config()['config']
  # begin 0, end on the 100-step grid at or before 0.8 x 2000.
  assert (got['begin_step'], got['end_step'], got['frequency']) == (0, 1600, 100)
  should, sparsity = sched(tf.constant(1600, tf.int64))
  assert bool(should) and float(sparsity) == pytest.approx(cfg.target_sparsity)
  # Fewer steps than the frequency: one update, at the end of the range.
  short = pruning.schedule(cfg, 40).get_config()['config']
  assert short['end_step'] == 32 and short['frequency'] == 32


def synthetic_batches(cfg, rng, n):
  """(transformed features, production-recipe targets) batches, and raw rows."""
  stats = {name: (1.0, 2.0) for name in NAMES}
  tft_layer = lean.transform_layer(stats)
  raw = lean.raw_rows(rng, n)
  transformed = {k: v.numpy() for k, v in tft_layer(
      dict(zip(NAMES, lean.feeds(raw)))).items()}
  exposures = np.full((n, len(synthetic.WINDOW_NAMES)), 1.0, np.float32)
  targets = {losses.COUNTS: rng.poisson(0.2, (n, len(synthetic.WINDOW_NAMES))).astype(np.float32),
             losses.EXPOSURES: exposures, losses.OBSERVED_EXPOSURES: exposures,
             distill.TCPA: np.full((n, 1), 60.0, np.float32),
             distill.TEACHER_MASK: np.zeros((n, 1), np.float32)}
  ds = tf.data.Dataset.from_tensor_slices((transformed, targets))
  return ds.batch(cfg.model.student.batch_size).repeat(), tft_layer, raw


@pytest.fixture(scope='module')
def pruned(tmp_path_factory):
  cfg = config_lib.load_config(None, [
      'distill.recipe=production', 'pruning.enabled=true',
      f'pruning.target_sparsity={SPARSITY}', 'pruning.frequency=5',
      f'model.student.train_steps={STEPS}', 'model.student.batch_size=64'])
  tf.keras.utils.set_random_seed(0)
  train, tft_layer, raw = synthetic_batches(cfg, np.random.default_rng(0), 2048)
  weights = distill.DistillWeights.from_config(cfg.distill)
  fn_args = types.SimpleNamespace(train_steps=STEPS, eval_steps=1, base_model=None)
  # The run_fn's own training path (warm start, wrap, fit with the callback, strip).
  network, _, _ = student_trainer.train_network(
      cfg, weights, 64, tf.distribute.get_strategy(), train, train, fn_args)
  export_dir = str(tmp_path_factory.mktemp('pruned') / 'student')
  export.save_student(network, tft_layer, export_dir, {}, cfg.dataset)
  return cfg, export_dir, raw


def zeros(x) -> float:
  return float((np.asarray(x) == 0).mean())


def test_exported_dense_kernels_have_the_configured_sparsity(pruned):
  _, export_dir, _ = pruned
  variables = {v.name: v.numpy() for v in tf.saved_model.load(export_dir).variables}
  # The hidden layers (the default pattern dense_*), under their own names.
  assert not [n for n in variables if 'prune_low_magnitude' in n]
  for name in ('dense_0', 'dense_1'):
    assert zeros(variables[f'{name}/kernel:0']) == pytest.approx(SPARSITY, abs=0.005)
  assert zeros(variables['window_heads/kernel:0']) == 0.0  # not configured


def test_pruned_student_converts_to_builtin_int8_and_tfma_equals_the_interpreter(
    pruned, tmp_path):
  _, export_dir, raw = pruned
  saved = convert.raw_saved_model(export_dir, str(tmp_path / 'raw'))
  calibration = lean.raw_rows(np.random.default_rng(3), 200)

  def representative():
    for i in range(200):
      yield {n: calibration[n][i:i + 1].reshape(1, 1).astype(
          features_lib.dtype(synthetic.column(n)).as_numpy_dtype) for n in NAMES}
  model = convert.convert(saved, 'int8', representative)
  convert.check(model, NAMES, 'int8')  # builtin ops, an int8 core
  it = convert.interpreter(model)
  fc = [op for op in it._get_ops_details()  # pylint: disable=protected-access
        if op['op_name'] == 'FULLY_CONNECTED']
  # The zeros survive quantization (int8 0 is exactly 0): the two hidden layers.
  assert [zeros(it.get_tensor(op['inputs'][1])) >= SPARSITY - 0.005
          for op in fc] == [True, True, False]

  model_dir = str(tmp_path / 'model')
  convert.write(model, model_dir)
  n = 300
  rows = {k: v[:n] for k, v in raw.items()}
  rows[columns.CLICK_ID] = np.arange(n, dtype=np.int64)
  rows[columns.TRUE_CONVERSIONS] = np.zeros(n, np.float32)
  path = str(tmp_path / 'eval.tfrecord')
  with tf.io.TFRecordWriter(path) as w:
    for record in codec.encode(rows):
      w.write(record)
  got = helpers.tfma_tflite_predictions(model_dir, path, columns.CLICK_ID,
                                        columns.TRUE_CONVERSIONS,
                                        str(tmp_path / 'predictions.pkl'))
  ours = convert.predict(model, rows)
  theirs = np.array([got[i] for i in range(n)])
  np.testing.assert_allclose(theirs, ours, rtol=1e-6)


def test_warm_start_weights_are_the_stripped_students(pruned):
  cfg, export_dir, _ = pruned
  network = towers.build_student_tower(cfg)  # unpruned, as a night without pruning
  loaded = export.load_warm_start(network, os.path.join(export_dir,
                                                        export.WARM_START_FILE))
  assert loaded.matched and not loaded.skipped, loaded
  assert zeros(network.get_layer('dense_0').kernel.numpy()) == pytest.approx(
      SPARSITY, abs=0.005)
