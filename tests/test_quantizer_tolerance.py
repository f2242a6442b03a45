"""The Quantizer's executor on a tiny trained student and a small world's
examples (no pipeline run): the INT8 model's per-example error against the
float student and its size, bounded by what this model measures."""

import os
import types

import numpy as np
import pytest
import tensorflow as tf
from tfx.utils import path_utils

import config as config_lib
from components.quantizer import convert
from models import distill
from models import export
from models import features as features_lib
from models import losses
from models import student_trainer
from schemas import records
from tests import helpers
from tests import test_serving_graph as lean
from world import synthetic

NAMES = synthetic.SERVING_FEATURES
STEPS = 100

# Bounds from this test's own model (the test prints its figures; -s shows
# them). Measured on the student below (small_world, 100 steps, seed 0, INT8
# with the config's calibration; 494 eval examples) on 2 cores, 2026-12-07,
# TF 2.16.2 / TFX 1.16.0: pConvs error mean 0.487%, max 8.45%, the same in two
# runs of this file alone; mean 0.577%, max 10.41% in a run after other test
# files in the same process (what ran before changes the trained student);
# 48,456 of 171,872 bytes, size ratio 0.2819, in all three.
# - The README's Quantization table states 1.12% / 5.8% (the per-feature graph
#   on the 640k-click benchmark's student; bench/reported/serving.json's INT8
#   now records 0.91% / 4.14%). This tiny model beats the mean and cannot reach
#   the max (a 100-step student on 3,000 clicks has a few examples far out in
#   its tails), so the max is bounded at what it measures.
# - The size ratio is the README's 0.282x (serving table): the bytes depend on
#   the architecture and the features' vocabularies, not on the weights, and
#   this student has the default architecture.
# Margins: 1.5x the larger measured error (the spread above, and
# TF's kernels and converter may move the errors across versions); +0.01 on the
# size ratio (a converter release may add a few hundred bytes), which keeps it
# under the 0.30x target.
MEASURED_MEAN_REL, MEASURED_MAX_REL, MEASURED_SIZE_RATIO = 0.00577, 0.1041, 0.2819
MARGIN = 1.5
SIZE_MARGIN = 0.01


class TransformModule(tf.Module):
  """Transform's math as a saved callable, as the Trainer's tft_layer is (the
  Quantizer calls the student's `tft_layer` to find the calibration tails)."""

  def __init__(self, stats):
    super().__init__()
    self._fn = lean.transform_layer(stats)

  @tf.function(input_signature=[{
      n: tf.TensorSpec([None, 1], features_lib.dtype(synthetic.column(n)), name=n)
      for n in NAMES}])
  def __call__(self, feeds):
    return self._fn(feeds)


def train_student(cfg, rows, export_dir):
  """The student tower trained briefly (production recipe, the run_fn's own
  training path) on the world's train rows through Transform's math with the
  rows' own statistics; exported as the Trainer does."""
  stats = {}
  for name in NAMES:
    col = synthetic.column(name)
    if col.kind == lean.columns.Kind.CATEGORICAL:
      continue
    x = rows[name].astype(np.float64)
    if col.kind == lean.columns.Kind.LOG_NUMERIC:
      x = np.log1p(np.maximum(x, 0))
    stats[name] = (float(x.mean()), float(x.std()))
  tft_layer = TransformModule(stats)
  n = len(rows[NAMES[0]])
  transformed = {k: v.numpy() for k, v in tft_layer(
      dict(zip(NAMES, lean.feeds(rows)))).items()}
  rng = np.random.default_rng(0)
  windows = len(synthetic.WINDOW_NAMES)
  exposures = np.ones((n, windows), np.float32)
  targets = {losses.COUNTS: rng.poisson(0.05, (n, windows)).astype(np.float32),
             losses.EXPOSURES: exposures, losses.OBSERVED_EXPOSURES: exposures,
             distill.TCPA: np.full((n, 1), 60.0, np.float32),
             distill.TEACHER_MASK: np.zeros((n, 1), np.float32)}
  train = tf.data.Dataset.from_tensor_slices((transformed, targets)).shuffle(
      n, seed=0).batch(cfg.model.student.batch_size).repeat()
  tf.keras.utils.set_random_seed(0)
  fn_args = types.SimpleNamespace(train_steps=STEPS, eval_steps=1, base_model=None)
  network, _, _ = student_trainer.train_network(
      cfg, distill.DistillWeights.from_config(cfg.distill), 64,
      tf.distribute.get_strategy(), train, train, fn_args)
  export.save_student(network, tft_layer, export_dir, {}, cfg.dataset)


@pytest.fixture(scope='module')
def quantized(small_world, tmp_path_factory):
  cfg, path = small_world
  cfg = config_lib.load_config(None, [
      'distill.recipe=production', f'model.student.train_steps={STEPS}',
      'model.student.batch_size=128'])
  root = tmp_path_factory.mktemp('quantizer_tolerance')
  examples = helpers.run_example_gen(cfg, path, root / 'examples')
  rows = records.read_examples(os.path.join(examples.uri, 'Split-train'))
  student_uri = str(root / 'student')
  train_student(cfg, rows, path_utils.serving_model_path(student_uri))
  model, report = helpers.run_quantizer(cfg, student_uri, examples, str(root / 'int8'))
  return cfg, student_uri, examples, model, report


def test_int8_error_and_size_are_within_what_this_model_measures(quantized):
  _, student_uri, examples, model, report = quantized
  eval_rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  with open(os.path.join(path_utils.serving_model_path(model.uri), 'tflite'), 'rb') as f:
    got = convert.predict(f.read(), eval_rows)
  raw = tf.saved_model.load(path_utils.serving_model_path(student_uri)).signatures[
      export.RAW_SIGNATURE]
  feeds = {n: tf.constant(eval_rows[n].reshape(-1, 1).astype(
      raw.structured_input_signature[1][n].dtype.as_numpy_dtype)) for n in NAMES}
  want = list(raw(**feeds).values())[0].numpy().ravel()
  rel = np.abs(got - want) / want
  print(f'measured: pConvs error mean {rel.mean():.4%} max {rel.max():.4%} over '
        f'{rel.size} eval examples; size ratio {report["size_ratio"]:.4f} '
        f'({report["quantized_bytes"]} / {report["float32_tflite_bytes"]} bytes); '
        f'report mean {report["errors"]["mean_rel_error"]:.4%} max '
        f'{report["errors"]["max_rel_error"]:.4%}')
  assert (got > 0).all() and report['eval_examples'] == rel.size
  assert rel.mean() < MARGIN * MEASURED_MEAN_REL, rel.mean()
  assert rel.max() < MARGIN * MEASURED_MAX_REL, rel.max()
  assert report['errors']['mean_rel_error'] < MARGIN * MEASURED_MEAN_REL
  assert report['errors']['max_rel_error'] < MARGIN * MEASURED_MAX_REL
  assert report['size_ratio'] < MEASURED_SIZE_RATIO + SIZE_MARGIN, report['size_ratio']
