"""The lean serving graph: raw serving features in by name, pConvs out.

See docs/architecture.md §5 and §6.

The Keras tower behind Transform's graph converts to TFLite as one embedding
path per categorical (CAST, FLOOR_MOD, GATHER, then Keras' dynamic RESHAPE:
SHAPE, STRIDED_SLICE, PACK) and one z-score per numeric (with the SELECT_V2 and
ZEROS_LIKE of a zero-variance guard): about 115 ops for three matrix products,
so a batch of candidates spends its time dispatching ops. This graph computes
the same function with every per-feature step vectorised:

  ids:      CONCATENATION of the int64 ids, one FLOOR_MOD by each feature's
            buckets, one ADD of each feature's offset into one packed table,
            one GATHER, one RESHAPE to [batch, features x dim];
  numerics: the log-scaled ones concatenated, log1p(max(x, 0)) once, then the
            plain ones appended, and the z-score as one multiply-add;
  core:     CONCATENATION, the ReLU FULLY_CONNECTEDs, the window heads;
  tail:     EXP and the window sum into pConvs [batch, 1].

The z-score's mean and scale are read off the Transform layer itself (it is
affine in the log-scaled value, so two probe rows give both), so the graph
needs no knowledge of tf.Transform's internals. No op depends on the batch
size except through -1 in RESHAPE, so any batch runs the same kernels.
"""

import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from models import features as features_lib
from models import towers
from schemas import columns

# Probe values for reading the z-score off the Transform layer (any two distinct
# values in the log-scaled features' domain, >= 0, integer for int features).
_PROBE = (0, 3)


def _prescale(col: columns.Column, x: np.ndarray) -> np.ndarray:
  """What the z-score is applied to: log1p(max(x, 0)) or x."""
  x = x.astype(np.float64)
  return np.log1p(np.maximum(x, 0.0)) if col.kind == columns.Kind.LOG_NUMERIC else x


def zscore_affine(tft_layer, cols: Sequence[columns.Column]) -> Dict[str, tuple]:
  """Per numeric feature, (scale, shift) with transformed = scale * prescale + shift.

  Read off `tft_layer` by transforming two probe rows: tft.scale_to_z_score is
  affine in its input (also when the variance is 0: x - mean).
  """
  feeds = {}
  for c in cols:
    dt = features_lib.dtype(c).as_numpy_dtype
    feeds[c.name] = tf.constant(np.array(_PROBE, dtype=dt).reshape(2, 1))
  out = tft_layer(feeds)
  affine = {}
  for c in cols:
    if c.kind == columns.Kind.CATEGORICAL:
      continue
    t = out[c.name].numpy().astype(np.float64).ravel()
    g = _prescale(c, np.array(_PROBE))
    scale = (t[1] - t[0]) / (g[1] - g[0])
    affine[c.name] = (scale, t[0] - scale * g[0])
  return affine


class LeanServing(tf.Module):
  """A network's serving function as the lean graph (see the module doc).

  Built from a trained tower (towers.build_tower: `embedding_<name>`,
  `dense_<i>`, `window_heads`) and its Transform layer; the weights are copied,
  so later changes to `network` do not reach it. `raw_features` is the
  signature: the features as dense [batch, 1] tensors named like the columns
  (int64 ids and counts, float32 numerics), output {'pconvs': [batch, 1]}.
  """

  def __init__(self, network: tf.keras.Model, tft_layer,
               features: Sequence[columns.Column], output_name: str = 'pconvs'):
    super().__init__(name='lean_serving')
    by_name = {c.name: c for c in features}
    names = list(by_name)

    def of(kind):
      return [n for n in names if by_name[n].kind == kind]
    cats = of(columns.Kind.CATEGORICAL)
    logs = of(columns.Kind.LOG_NUMERIC)
    plain = of(columns.Kind.NUMERIC)
    self._ints = tuple(n for n in names if by_name[n].dtype == 'int')
    # The log-scaled ints first, so they need one CAST between them.
    logs = ([n for n in logs if n in self._ints] +
            [n for n in logs if n not in self._ints])
    numerics = logs + plain
    tables = [network.get_layer(f'embedding_{n}').get_weights()[0] for n in cats]
    dim = tables[0].shape[1] if tables else 0
    buckets = [by_name[n].buckets for n in cats]
    offsets = np.cumsum([0] + buckets[:-1]).astype(np.int64)
    affine = zscore_affine(tft_layer, list(features))

    # dense_0's rows are in the Keras concatenation's order (`names`, each
    # categorical `dim` wide); this graph concatenates embeddings first, then
    # the numerics in `numerics` order.
    start, row = {}, 0
    for n in names:
      start[n] = row
      row += dim if by_name[n].kind == columns.Kind.CATEGORICAL else 1
    order: List[int] = [start[n] + j for n in cats for j in range(dim)]
    order += [start[n] for n in numerics]
    layers = []
    i = 0
    while True:
      try:
        layer = network.get_layer(f'dense_{i}')
      except ValueError:
        break
      layers.append(layer.get_weights())
      i += 1
    if not layers or layers[0][0].shape[0] != row:
      raise ValueError(f'dense_0 has {layers[0][0].shape[0] if layers else 0} inputs; '
                       f'the features give {row}')
    layers[0] = [layers[0][0][order], layers[0][1]]
    head = network.get_layer('window_heads').get_weights()

    self._cats, self._logs, self._plain = cats, logs, plain
    self._width = len(cats) * dim
    self._output = output_name
    const = lambda v, dt=tf.float32: tf.Variable(np.asarray(v), dtype=dt,
                                                 trainable=False)
    self.table = const(np.concatenate(tables) if tables else np.zeros([0, 0]))
    self.buckets = const(np.array(buckets, np.int64).reshape(1, -1), tf.int64)
    self.offsets = const(offsets.reshape(1, -1), tf.int64)
    self.scale = const(np.array([affine[n][0] for n in numerics]).reshape(1, -1))
    self.shift = const(np.array([affine[n][1] for n in numerics]).reshape(1, -1))
    self.kernels = [const(k) for k, _ in layers] + [const(head[0])]
    self.biases = [const(b) for _, b in layers] + [const(head[1])]
    self.names = names

    specs = [tf.TensorSpec([None, 1], features_lib.dtype(by_name[n]), name=n)
             for n in names]

    @tf.function(input_signature=specs)
    def raw_features(*tensors):
      return {self._output: self._forward(dict(zip(names, tensors)))}
    self.raw_features = raw_features

  def _forward(self, feats: Dict[str, tf.Tensor]) -> tf.Tensor:
    parts = []
    if self._cats:
      ids = tf.concat([feats[n] for n in self._cats], axis=1)
      ids = tf.math.floormod(ids, self.buckets) + self.offsets
      parts.append(tf.reshape(tf.gather(self.table, ids), [-1, self._width]))
    numerics = []
    if self._logs:
      ints = [feats[n] for n in self._logs if n in self._ints]
      floats = [feats[n] for n in self._logs if n not in self._ints]
      logs = ([tf.cast(tf.concat(ints, axis=1), tf.float32)] if ints else []) + floats
      numerics.append(tf.math.log1p(tf.maximum(tf.concat(logs, axis=1), 0.0)))
    numerics += [tf.cast(feats[n], tf.float32) for n in self._plain]
    if numerics:
      parts.append(tf.concat(numerics, axis=1) * self.scale + self.shift)
    x = tf.concat(parts, axis=1)
    for kernel, bias in zip(self.kernels[:-1], self.biases[:-1]):
      x = tf.nn.relu(tf.matmul(x, kernel) + bias)
    log_rates = tf.matmul(x, self.kernels[-1]) + self.biases[-1]
    return tf.reduce_sum(tf.exp(log_rates), axis=1, keepdims=True)


def per_feature_graph(network: tf.keras.Model, tft_layer, features, out_dir: str,
                      output_name: str = 'pconvs') -> str:
  """The raw-feature graph the lean one replaced (issue 18), saved as
  `serving_default` under out_dir: the Transform layer, then the Keras tower
  feature by feature, as models/export.raw_feature_function built it before
  (git show 5e9836d^:models/export.py). Kept to measure the ops the lean graph
  saves (bench/serving_bench.py's ops target; tests/test_serving_graph.py)."""
  names = [c.name for c in features]
  specs = [tf.TensorSpec([None, 1], features_lib.dtype(c), name=c.name) for c in features]

  @tf.function(input_signature=specs)
  def raw_features(*tensors):
    transformed = tft_layer(dict(zip(names, tensors)))
    net = network({n: transformed[n] for n in names}, training=False)
    return {output_name: tf.reduce_sum(tf.exp(net[towers.LOG_RATES]), axis=1,
                                       keepdims=True)}
  module = tf.Module()
  module.weights = list(network.weights)  # what the function captures; the
  module.tft_layer = tft_layer  # Keras model itself would be traced again
  saved = os.path.join(out_dir, 'per_feature')
  tf.saved_model.save(module, saved, signatures={'serving_default': raw_features})
  return saved
