"""Calibration sampling, and what quantization costs: error, NLL, size, latency."""

import time
from typing import Callable, Dict, Sequence

import numpy as np
import tensorflow as tf

from components.quantizer import convert
from models import export
from models import nll
from observation import eval_labels
from schemas import codec
from schemas import columns

SAMPLINGS = ('uniform', 'tcpa_stratified')


def calibration_indices(rows: Dict[str, np.ndarray], count: int, sampling: str,
                        seed: int = 0) -> np.ndarray:
  """Indices of the representative examples.

  uniform: a random sample; tcpa_stratified: an equal share from each tCPA bucket
  (the high-tCPA tail is rare, and its activations would otherwise set no range);
  uniform when the dataset has no tCPA (no tcpa_bucket column).
  """
  n = len(rows[columns.CLICK_ID])
  rng = np.random.default_rng(seed)
  if sampling not in SAMPLINGS:
    raise ValueError(f'unknown calibration sampling {sampling!r}; one of {SAMPLINGS}')
  if sampling == 'uniform' or columns.TCPA_BUCKET not in rows:
    return np.sort(rng.choice(n, min(count, n), replace=False))
  buckets = rows[columns.TCPA_BUCKET]
  per = max(1, count // len(columns.TCPA_BUCKETS))
  chosen = []
  for bucket in columns.TCPA_BUCKETS:
    members = np.flatnonzero(buckets == bucket)
    chosen.append(rng.choice(members, min(per, len(members)), replace=False))
  return np.sort(np.concatenate(chosen))


def tail_indices(loaded, rows: Dict[str, np.ndarray], top: int = 20,
                 extremes: int = 5) -> np.ndarray:
  """Examples that set the ranges: the highest pConvs and the extremes of every
  transformed numeric feature. TFLite calibrates min/max ranges, so without them
  the heads' range stops short of positive log-rates and large rates saturate."""
  names = list(loaded.signatures[export.RAW_SIGNATURE].structured_input_signature[1])
  feeds = {n: tf.constant(rows[n].reshape(-1, 1)) for n in names}
  pconvs = list(loaded.signatures[export.RAW_SIGNATURE](**feeds).values())[0].numpy()
  idx = set(np.argsort(-pconvs.ravel())[:top].tolist())
  transformed = loaded.tft_layer(feeds)
  for name in names:
    if transformed[name].dtype.is_floating:  # numerics (categoricals stay ids)
      order = np.argsort(transformed[name].numpy().ravel())
      idx |= set(order[:extremes].tolist()) | set(order[-extremes:].tolist())
  return np.array(sorted(idx), dtype=np.int64)


def representative(rows: Dict[str, np.ndarray], names: Sequence[str],
                   dtypes: Dict[str, np.dtype], indices: np.ndarray
                   ) -> Callable[[], object]:
  def gen():
    for i in indices:
      yield {n: rows[n][i:i + 1].reshape(1, 1).astype(dtypes[n]) for n in names}
  return gen


def prediction_errors(quantized: np.ndarray, reference: np.ndarray) -> Dict[str, float]:
  rel = np.abs(quantized - reference) / np.maximum(np.abs(reference), 1e-12)
  return {'mean_abs_error': float(np.mean(np.abs(quantized - reference))),
          'mean_rel_error': float(rel.mean()), 'max_rel_error': float(rel.max()),
          'max_abs_error': float(np.max(np.abs(quantized - reference))),
          'zero_predictions': int((quantized <= 0).sum())}


def scored_nll(pconvs: np.ndarray, rows: Dict[str, np.ndarray],
               label: eval_labels.EvalLabelSpec) -> float:
  """Poisson NLL of pConvs against `label` (its mode already resolved)."""
  y, scale, keep = label.label_and_scale(rows)
  return nll.poisson_nll(y[keep], scale[keep] * pconvs[keep])


def _percentiles(seconds: Sequence[float]) -> Dict[str, float]:
  us = np.asarray(seconds) * 1e6
  return {'p50_us': float(np.percentile(us, 50)), 'p99_us': float(np.percentile(us, 99)),
          'p99.9_us': float(np.percentile(us, 99.9)), 'samples': len(us)}


def tflite_latency(model: bytes, rows: Dict[str, np.ndarray], samples: int,
                   warmup: int = 200) -> Dict[str, float]:
  """Single-example invoke latency (one thread; the default XNNPACK delegate, as a
  CPU server would run it)."""
  it = convert.interpreter(model, delegates=True)
  inputs = it.get_input_details()
  n = len(next(iter(rows.values())))
  feeds = []
  for i in range(samples + warmup):
    j = i % n
    feeds.append([(d['index'], rows[d['name'][len(convert.INPUT_PREFIX):].split(':')[0]]
                   [j:j + 1].reshape(1, 1).astype(d['dtype'])) for d in inputs])
  times = []
  for i, feed in enumerate(feeds):
    start = time.perf_counter()
    for index, value in feed:
      it.set_tensor(index, value)
    it.invoke()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return _percentiles(times)


def saved_model_latency(student_dir: str, records: Sequence[bytes], samples: int,
                        warmup: int = 200) -> Dict[str, float]:
  """Single-example latency of the float serving SavedModel (tf.Example in)."""
  serve = tf.saved_model.load(student_dir).signatures[export.SERVING_SIGNATURE]
  times = []
  for i in range(samples + warmup):
    example = tf.constant([records[i % len(records)]])
    start = time.perf_counter()
    serve(examples=example)[export.PCONVS].numpy()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  return _percentiles(times)


def feature_rows(records: Sequence[bytes]) -> Dict[str, np.ndarray]:
  return codec.decode(list(records))
