"""The lean serving graph: the same function as Transform plus the Keras tower,
in a handful of builtin TFLite ops, float and INT8 (models/serving_graph.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from components.quantizer import convert
from models import features as features_lib
from models import serving_graph
from models import towers
from schemas import columns
from world import synthetic

NAMES = synthetic.SERVING_FEATURES
# The per-feature graph the lean one replaced (issue 18) has a shape
# computation per embedding (and, behind TFT's real layer, a zero-variance guard
# per numeric: 115 INT8 ops on the benchmark's student, which the serving
# benchmark now measures, bench/serving_bench.per_feature_ops). Here it is
# measured on the same tower and transform as the lean graph.
PER_FEATURE_OPS = {'SHAPE', 'STRIDED_SLICE', 'PACK', 'SELECT_V2', 'ZEROS_LIKE'}


def transform_layer(stats):
  """Transform's math (models/features.py) with fixed analyzer values; the
  feature whose variance is 0 takes tft.scale_to_z_score's x - mean branch."""
  def layer(feeds):
    out = {}
    for name, x in feeds.items():
      col = synthetic.column(name)
      if col.kind == columns.Kind.CATEGORICAL:
        out[name] = tf.math.floormod(tf.cast(x, tf.int64), col.buckets)
        continue
      x = tf.cast(x, tf.float32)
      if col.kind == columns.Kind.LOG_NUMERIC:
        x = tf.math.log1p(tf.maximum(x, 0.0))
      mean, std = stats[name]
      out[name] = (x - mean) / std if std > 0 else x - mean
    return out
  return layer


def raw_rows(rng, n):
  rows = {}
  for name in NAMES:
    col = synthetic.column(name)
    if col.kind == columns.Kind.CATEGORICAL:  # negative and out-of-range ids too
      rows[name] = rng.integers(-50, 3 * col.buckets, n)
    elif col.dtype == 'int':
      rows[name] = rng.integers(0, 40, n)
    else:
      rows[name] = rng.lognormal(1.0, 1.0, n).astype(np.float32)
  return rows


def feeds(rows):
  return [tf.constant(rows[n].reshape(-1, 1).astype(features_lib.dtype(synthetic.column(n)).as_numpy_dtype))
          for n in NAMES]


@pytest.fixture(scope='module')
def lean(tmp_path_factory):
  rng = np.random.default_rng(0)
  network = towers.build_student_tower(config_lib.load_config(None, []))
  for layer in network.layers:  # trained-like: non-zero biases, varied tables
    weights = layer.get_weights()
    if weights:
      layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                         for w in weights])
  stats = {n: (float(rng.normal(1, 0.5)), float(rng.uniform(0.5, 2))) for n in NAMES}
  stats['user_engagement'] = (0.3, 0.0)
  tft_layer = transform_layer(stats)
  towers.rescale_embeddings(network, synthetic.features(NAMES))
  graph = serving_graph.LeanServing(network, tft_layer, synthetic.features(NAMES))
  module = tf.Module()
  module.graph = graph
  path = str(tmp_path_factory.mktemp('lean') / 'saved')
  tf.saved_model.save(module, path, signatures={'serving_default': graph.raw_features})
  return network, tft_layer, graph, path


def reference(network, tft_layer, rows):
  transformed = tft_layer(dict(zip(NAMES, feeds(rows))))
  log_rates = network(transformed)[towers.LOG_RATES]
  return tf.reduce_sum(tf.exp(log_rates), axis=1).numpy()


def per_feature_float32_ops(network, tft_layer, lean_path) -> int:
  """Ops of the per-feature graph of `network` behind `tft_layer`, float32."""
  saved = serving_graph.per_feature_graph(network, tft_layer, synthetic.features(NAMES),
                                          os.path.dirname(lean_path))
  return len(convert.op_table(convert.convert(saved, 'float32')))


def test_lean_graph_is_the_transform_and_tower_function(lean):
  network, tft_layer, graph, _ = lean
  rows = raw_rows(np.random.default_rng(1), 500)
  got = graph.raw_features(*feeds(rows))['pconvs'].numpy()
  assert got.shape == (500, 1)
  np.testing.assert_allclose(got.ravel(), reference(network, tft_layer, rows), rtol=2e-5)


def test_float_tflite_is_lean_builtin_and_equals_the_graph_at_any_batch(lean):
  network, tft_layer, _, path = lean
  model = convert.convert(path, 'float32')
  summary = convert.check(model, NAMES, 'float32')
  ops = summary['ops']
  assert ops['GATHER'] == 1 and ops['FULLY_CONNECTED'] == 3, ops
  assert not PER_FEATURE_OPS & set(ops), ops
  before = per_feature_float32_ops(network, tft_layer, path)
  assert sum(ops.values()) * 3 <= before, (ops, before)  # at least 3x fewer
  # Stripped: only the contract's tensors (inputs by name, the output) have names.
  it = convert.interpreter(model)
  named = {t['name'] for t in it.get_tensor_details() if t['name']}
  contract = {d['name'] for d in it.get_input_details() + it.get_output_details()}
  assert named == contract and len(contract) == len(NAMES) + 1
  rows = raw_rows(np.random.default_rng(2), 1000)
  want = reference(network, tft_layer, rows)
  for batch in (1, 7, 256):  # convert.predict feeds batches of this size
    np.testing.assert_allclose(convert.predict(model, rows, batch=batch), want,
                               rtol=2e-5)


def test_int8_core_is_int8_end_to_end_with_float_edges(lean):
  network, tft_layer, _, path = lean
  calibration = raw_rows(np.random.default_rng(3), 300)

  def representative():
    for i in range(300):
      yield {n: calibration[n][i:i + 1].reshape(1, 1).astype(
          features_lib.dtype(synthetic.column(n)).as_numpy_dtype) for n in NAMES}
  model = convert.convert(path, 'int8', representative)
  convert.check(model, NAMES, 'int8')
  table = convert.op_table(model)
  names = [op.name for op in table]
  # One way into the int8 core (the normalised numerics) and one way out (the
  # window heads' log-rates): the embeddings are int8 from the table on.
  assert names.count('QUANTIZE') == 1 and names.count('DEQUANTIZE') == 1, names
  core = [op for op in table if op.name in ('GATHER', 'RESHAPE', 'FULLY_CONNECTED')
          or (op.name == 'CONCATENATION' and np.int8 in op.input_dtypes)]
  assert len(core) == 6 and all(op.input_dtypes[0] == np.int8 for op in core), core
  assert all(op.input_dtypes[0] == np.float32 for op in table
             if op.name in ('LOG', 'EXP', 'SUM'))
  rows = raw_rows(np.random.default_rng(4), 1000)
  got = convert.predict(model, rows, batch=64)
  want = reference(network, tft_layer, rows)
  assert np.mean(np.abs(got - want) / want) < 0.05
