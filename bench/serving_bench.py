"""Serving benchmark: latency the way ads serving calls the model, with quality.

  python -m bench.serving_bench [--quick] [--samples 10000] [--resume]

Ads serving scores a batch of candidates per request. For every model below and
every batch size (1, 16, 64, 256, 1024 candidates), with one thread and with the
runtime's default thread count, it times two things, each stated:

  invoke:      the model call alone (TFLite invoke(); the SavedModel's signature
               call on a ready tensor of serialized tf.Examples);
  per_request: what a request costs the server: set every input, invoke, read
               the output (the SavedModel: build the examples tensor, call,
               read the numpy result).

Models (the benchmark's configuration: the quality benchmark's first world and
its pipeline run, `bench.quality_bench.run_pipeline`; the default KD student
trained by the pipeline's own run_fn under seed 0, quantized by the Quantizer's
own executor):

  float SavedModel       the student's serving signature (tf.Example in), as TF
                         Serving runs it: parsing, Transform and the network;
  float32 TFLite         the lean raw-feature graph (models/serving_graph.py);
  dynamic range TFLite   the same graph, int8 weights;
  INT8 TFLite            the same graph, the Quantizer's int8 mode;
  teacher float32 TFLite the teacher's network in the same lean graph.

Every TFLite model runs with the default delegates (XNNPACK). The TFLite models
of one batch size and thread count are timed in alternation, in rounds, so a
slow spell of the shared machine falls on all of them; the SavedModel runs in
its own process per thread count (TensorFlow fixes its thread pools when it
starts). Each point has `--samples` timings (10,000: p99.9 rests on the 10
slowest), after a warm-up. Quantiles carry order-statistic 95% CIs and
ratios percentile-bootstrap CIs (bench/stats.py).

Quality: Poisson NLL against the true conversions of the quality benchmark's
scoring clicks of the same world (new clicks, never trained on), and each model's
paired relative change vs the float SavedModel with a click-level 95% CI.

Writes bench/reported/serving.json (--quick: bench/results/serving/quick/serving.json);
`python -m bench.readme` writes the docs/benchmarks.md tables from the committed JSON
(bench/serving_report.py).
"""

import argparse
import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from tfx.utils import path_utils

from bench import common
from bench import quality_bench
from bench import serving_report
from bench import stats
from components.quantizer import convert
from models import export
from models import features as features_lib
from models import nll
from models import serving_graph
from models import towers
from schemas import codec
from schemas import columns
from world import synthetic

REPORTED = 'bench/reported/serving.json'
RESULTS = 'bench/results/serving'
BATCHES = serving_report.BATCHES
THREADS = (1, None)  # None: the runtime's default
MODES = serving_report.MODES
QUANTILES = serving_report.QUANTILES
STUDENT_RECIPE = 'kd_full'
SAVED_MODEL, FLOAT32, DYNAMIC, INT8, TEACHER = (
    serving_report.SAVED_MODEL, serving_report.FLOAT32, serving_report.DYNAMIC,
    serving_report.INT8, serving_report.TEACHER)
WARMUP = 200
ROUNDS = 10
# Distinct requests cycled through (a server never sees one batch twice in a row).
REQUESTS = 32


def thread_key(threads: Optional[int]) -> str:
  return 'default' if threads is None else str(threads)


# --- Models -------------------------------------------------------------------


def teacher_network(cfg, teacher_dir: str) -> tf.keras.Model:
  """The teacher's Keras tower with the weights of its SavedModel (by name)."""
  network = towers.build_teacher(cfg)
  saved = {v.name: v.numpy() for v in tf.saved_model.load(teacher_dir).variables}
  for weight in network.weights:
    weight.assign(saved[weight.name])
  return network


def teacher_tflite(cfg, artifacts, out_dir: str, examples: List[bytes]) -> bytes:
  """The teacher's network in the lean graph, float32 TFLite; checked against
  the teacher's own serving signature."""
  teacher_dir = path_utils.serving_model_path(artifacts['teacher'])
  network = teacher_network(cfg, teacher_dir)
  tft_layer = tft.TFTransformOutput(artifacts['transform']).transform_features_layer()
  names = synthetic.TEACHER_FEATURES
  module = tf.Module()
  module.graph = serving_graph.LeanServing(network, tft_layer,
                                           synthetic.features(names),
                                           output_name=export.PCONVS)
  saved = os.path.join(out_dir, 'teacher_lean')
  tf.saved_model.save(module, saved,
                      signatures={'serving_default': module.graph.raw_features})
  model = convert.convert(saved, 'float32')
  decoded = codec.decode(examples[:2000])
  got = convert.predict(model, decoded, batch=256)
  want = quality_bench.predict_saved_model(teacher_dir, examples[:2000])[:, 0]
  np.testing.assert_allclose(got, want, rtol=1e-4, err_msg='teacher lean graph')
  return model


def per_feature_ops(cfg, tft_layer, rows: Dict[str, np.ndarray], out_dir: str) -> Dict:
  """op_summary of the per-feature graph of the student's architecture in the
  Quantizer's INT8 mode (the op count does not depend on the weights; the
  calibration uses the first 200 rows). A conversion that fails is recorded as
  not measured, with its reason, rather than stopping the benchmark."""
  features = cfg.dataset.serving_features()
  try:
    saved = serving_graph.per_feature_graph(towers.build_student_tower(cfg), tft_layer,
                                            features, out_dir)

    def representative():
      for i in range(200):
        yield {c.name: rows[c.name][i:i + 1].reshape(1, 1).astype(
            features_lib.dtype(c).as_numpy_dtype) for c in features}
    return op_summary(convert.convert(saved, 'int8', representative))
  except Exception as e:  # pylint: disable=broad-except
    return {'not_recorded': f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'}


@dataclasses.dataclass
class Models:
  student_dir: str
  tflite: Dict[str, bytes]
  quantizer_reports: Dict[str, Dict]
  per_feature_ops: Dict  # per_feature_ops: the graph the lean one replaced


def build_models(size, cfg, artifacts, out: str, examples: List[bytes],
                 resume: bool, log=print) -> Models:
  student_dir = os.path.join(out, 'student')
  student_cfg = quality_bench.bench_config(
      size, quality_bench.FIRST_WORLD_SEED,
      quality_bench.RECIPES[STUDENT_RECIPE] + ['model.seed=0'])
  if not (resume and os.path.exists(os.path.join(student_dir, 'saved_model.pb'))):
    t = time.time()
    quality_bench.train_student(student_cfg, artifacts, student_dir)
    log(f'student trained in {time.time() - t:.0f}s')
  tflite, reports = {}, {}
  raw = convert.raw_saved_model(student_dir, os.path.join(out, 'raw'))
  tflite[FLOAT32] = convert.convert(raw, 'float32')
  for key, mode in ((DYNAMIC, 'dynamic_range'), (INT8, 'int8')):
    reports[key] = quality_bench.quantize(artifacts, student_dir, mode,
                                          os.path.join(out, mode), student_cfg,
                                          latency_samples=100)
    with open(os.path.join(path_utils.serving_model_path(
        os.path.join(out, mode, 'model')), 'tflite'), 'rb') as f:
      tflite[key] = f.read()
  tflite[TEACHER] = teacher_tflite(cfg, artifacts, out, examples)
  tft_layer = tft.TFTransformOutput(artifacts['transform']).transform_features_layer()
  before = per_feature_ops(student_cfg, tft_layer, codec.decode(examples[:200]), out)
  return Models(student_dir, tflite, reports, before)


# --- Quality ------------------------------------------------------------------


def quality(models: Models, rows: Dict[str, np.ndarray], examples: List[bytes]
            ) -> Dict:
  """Poisson NLL per model on the scoring clicks, and paired changes."""
  preds = {SAVED_MODEL: quality_bench.predict_saved_model(models.student_dir,
                                                          examples)[:, 0]}
  for key, model in models.tflite.items():
    preds[key] = convert.predict(model, rows)
  y = rows[columns.TRUE_CONVERSIONS].astype(np.float64)
  per = {k: nll.poisson_nll_per_example(y, p) for k, p in preds.items()}
  out = {'clicks': int(y.size), 'nll': {k: float(v.mean()) for k, v in per.items()}}

  def paired(a, b):
    r = stats.paired_relative([per[a][None]], [per[b][None]])
    half = 1.96 * r['click_se']
    return {'mean': r['mean'], 'ci95': [r['mean'] - half, r['mean'] + half]}
  out['vs_float_saved_model'] = {k: paired(k, SAVED_MODEL) for k in per
                                 if k != SAVED_MODEL}
  out['quantization_cost'] = {k: paired(k, FLOAT32) for k in (DYNAMIC, INT8)}
  out['max_rel_diff_float32_tflite_vs_saved_model'] = float(
      np.max(np.abs(preds[FLOAT32] - preds[SAVED_MODEL]) / preds[SAVED_MODEL]))
  return out


# --- Latency ------------------------------------------------------------------


def requests_of(rows: Dict[str, np.ndarray], batch: int, seed: int = 0
                ) -> List[np.ndarray]:
  """REQUESTS distinct batches (indices into the scoring rows)."""
  rng = np.random.default_rng([seed, batch])
  n = len(rows[columns.TRUE_CONVERSIONS])
  return [rng.choice(n, batch, replace=False) for _ in range(REQUESTS)]


class TfliteRunner:
  """One interpreter at one batch size: default delegates (XNNPACK)."""

  def __init__(self, model: bytes, batch: int, threads: Optional[int],
               rows: Dict[str, np.ndarray], requests: List[np.ndarray]):
    kwargs = {} if threads is None else {'num_threads': threads}
    self.it = tf.lite.Interpreter(model_content=model, **kwargs)
    inputs = self.it.get_input_details()
    for d in inputs:
      self.it.resize_tensor_input(d['index'], [batch, 1])
    self.it.allocate_tensors()
    (self.output,) = [d['index'] for d in self.it.get_output_details()]
    self.feeds = [[(d['index'], np.ascontiguousarray(
        rows[d['name'][len(convert.INPUT_PREFIX):].split(':')[0]][idx]
        .reshape(batch, 1).astype(d['dtype']))) for d in inputs] for idx in requests]
    self.i = 0

  def time(self, n: int, mode: str) -> np.ndarray:
    it, out, feeds, clock = self.it, self.output, self.feeds, time.perf_counter_ns
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor
    times = np.empty(n, dtype=np.int64)
    for k in range(n):
      feed = feeds[(self.i + k) % len(feeds)]
      if mode == 'per_request':
        start = clock()
        for index, value in feed:
          set_tensor(index, value)
        invoke()
        get_tensor(out)
        times[k] = clock() - start
      else:
        for index, value in feed:
          set_tensor(index, value)
        start = clock()
        invoke()
        times[k] = clock() - start
        get_tensor(out)
    self.i += n
    return times


def time_tflite(models: Dict[str, bytes], rows, samples: int, log=print) -> Dict:
  """{model: {threads: {batch: {mode: [ns]}}}}, models alternating in rounds."""
  out: Dict = {k: {} for k in models}
  for threads in THREADS:
    for batch in BATCHES:
      requests = requests_of(rows, batch)
      runners = {k: TfliteRunner(m, batch, threads, rows, requests)
                 for k, m in models.items()}
      times = {k: {m: [] for m in MODES} for k in models}
      for runner in runners.values():
        for mode in MODES:
          runner.time(WARMUP, mode)
      per_round = -(-samples // ROUNDS)
      t = time.time()
      for _ in range(ROUNDS):
        for key, runner in runners.items():
          for mode in MODES:
            times[key][mode].append(runner.time(per_round, mode))
      for key in models:
        out[key].setdefault(thread_key(threads), {})[str(batch)] = {
            mode: np.concatenate(times[key][mode])[:samples] for mode in MODES}
      log(f'tflite threads={thread_key(threads)} batch={batch}: '
          f'{time.time() - t:.0f}s')
  return out


def saved_model_worker(args) -> int:
  """Times the float SavedModel in this process (its thread count fixed first)."""
  if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  serve = tf.saved_model.load(args.student).signatures[export.SERVING_SIGNATURE]
  with open(args.examples, 'rb') as f:
    examples = pickle.load(f)
  rows = {columns.TRUE_CONVERSIONS: np.zeros(len(examples))}
  out = {}
  for batch in BATCHES:
    requests = [[examples[i] for i in idx] for idx in requests_of(rows, batch)]
    tensors = [tf.constant(r) for r in requests]
    out[str(batch)] = {}
    for mode in MODES:
      for k in range(WARMUP):
        serve(examples=tensors[k % REQUESTS])[export.PCONVS].numpy()
      times = np.empty(args.samples, dtype=np.int64)
      clock = time.perf_counter_ns
      for k in range(args.samples):
        if mode == 'per_request':
          start = clock()
          serve(examples=tf.constant(requests[k % REQUESTS]))[export.PCONVS].numpy()
          times[k] = clock() - start
        else:
          tensor = tensors[k % REQUESTS]
          start = clock()
          result = serve(examples=tensor)
          times[k] = clock() - start
          result[export.PCONVS].numpy()
      out[str(batch)][mode] = times
  np.savez(args.out, **{f'{b}/{m}': t for b, d in out.items() for m, t in d.items()})
  return 0


def time_saved_model(student_dir: str, examples: List[bytes], samples: int, work: str,
                     log=print) -> Dict:
  path = os.path.join(work, 'examples.pkl')
  with open(path, 'wb') as f:
    pickle.dump(list(examples), f)
  out = {}
  for threads in THREADS:
    dump = os.path.join(work, f'saved_model_{thread_key(threads)}.npz')
    t = time.time()
    subprocess.run([sys.executable, '-m', 'bench.serving_bench', '--saved-model-worker',
                    '--student', student_dir, '--examples', path, '--out', dump,
                    '--samples', str(samples), '--threads', str(threads or 0)],
                   check=True, env={**os.environ, 'TF_USE_LEGACY_KERAS': '1'})
    with np.load(dump) as z:
      got = {}
      for key in z.files:
        batch, mode = key.split('/')
        got.setdefault(batch, {})[mode] = z[key]
    out[thread_key(threads)] = got
    log(f'saved model threads={thread_key(threads)}: {time.time() - t:.0f}s')
  return out


def summarize(times: Dict) -> Dict:
  """Quantiles (us) with order-statistic CIs per model, threads, batch, mode."""
  out: Dict = {}
  for key, by_threads in times.items():
    for threads, by_batch in by_threads.items():
      for batch, by_mode in by_batch.items():
        for mode, ns in by_mode.items():
          us = np.asarray(ns, dtype=np.float64) / 1e3
          point = {'samples': int(us.size), 'mean_us': float(us.mean())}
          for name, q in QUANTILES.items():
            est, lo, hi = stats.quantile_ci(us, q)
            point[name] = {'us': est, 'ci95': [lo, hi]}
          out.setdefault(key, {}).setdefault(threads, {}).setdefault(
              batch, {})[mode] = point
  return out


def ratios(times: Dict, a: str, b: str) -> Dict:
  """p50 and p99.9 of model a over model b with bootstrap CIs, everywhere."""
  out: Dict = {}
  for threads, by_batch in times[a].items():
    for batch, by_mode in by_batch.items():
      for mode, ns in by_mode.items():
        other = times[b][threads][batch][mode]
        point = {}
        for name in ('p50', 'p99.9'):
          est, lo, hi = stats.quantile_ratio_ci(ns, other, QUANTILES[name])
          point[name] = {'ratio': est, 'ci95': [lo, hi]}
        out.setdefault(threads, {}).setdefault(batch, {})[mode] = point
  return out


def op_summary(model: bytes) -> Dict:
  counts: Dict[str, int] = {}
  for op in convert.op_table(model):
    counts[op.name] = counts.get(op.name, 0) + 1
  return {'ops': counts, 'op_count': sum(counts.values()), 'bytes': len(model)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.serving_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='the quality benchmark\'s quick size and 1,000 timings per '
                      'point (development; not for quoting)')
  parser.add_argument('--samples', type=int, help='timings per point (default 10,000; '
                      '--quick 1,000)')
  parser.add_argument('--resume', action='store_true',
                      help='reuse the student trained by an earlier run')
  parser.add_argument('--out', help=f'result JSON (default {REPORTED}; --quick: '
                      f'{RESULTS}/quick/serving.json)')
  parser.add_argument('--saved-model-worker', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--student', help=argparse.SUPPRESS)
  parser.add_argument('--examples', help=argparse.SUPPRESS)
  parser.add_argument('--threads', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  samples = args.samples or (1_000 if args.quick else 10_000)
  if args.saved_model_worker:
    args.samples = samples
    return saved_model_worker(args)
  t0 = time.time()
  size, cfg, artifacts, rows = quality_bench.first_world(args.quick)
  out_dir = os.path.join(RESULTS, size.name)
  os.makedirs(out_dir, exist_ok=True)
  examples = quality_bench.serialized(rows)
  models = build_models(size, cfg, artifacts, out_dir, examples, args.resume)
  result = {**common.provenance(cfg), 'quick': args.quick, 'size': dataclasses.asdict(size),
            'student': f'{STUDENT_RECIPE}-s0', 'samples': samples,
            'batches': list(BATCHES), 'threads': [thread_key(t) for t in THREADS],
            'modes': list(MODES), 'delegates': 'default (XNNPACK) for every TFLite model',
            'models': {k: op_summary(m) for k, m in models.tflite.items()},
            serving_report.PER_FEATURE: models.per_feature_ops}
  result['quality'] = quality(models, rows, examples)
  print('quality', json.dumps(result['quality']['nll']), flush=True)
  times = time_saved_model(models.student_dir, examples[:20_000], samples, out_dir)
  times = {SAVED_MODEL: times, **time_tflite(models.tflite, rows, samples)}
  result['latency'] = summarize(times)
  result['ratios'] = {'int8_vs_float32': ratios(times, INT8, FLOAT32),
                      'int8_vs_teacher': ratios(times, INT8, TEACHER),
                      'float32_vs_saved_model': ratios(times, FLOAT32, SAVED_MODEL)}
  result['quantizer'] = {k: {f: r[f] for f in ('nll_relative_change', 'errors',
                                                'size_ratio', 'ops')}
                         for k, r in models.quantizer_reports.items()}
  result['targets'] = serving_report.targets(result)
  result['seconds'] = time.time() - t0
  out = args.out or (os.path.join(out_dir, 'serving.json') if args.quick else REPORTED)
  common.write_json(out, result)
  print(serving_report.markdown(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
