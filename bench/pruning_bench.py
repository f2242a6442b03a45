"""Pruning benchmark: the student pruned at 0/30/50/70% before INT8, measured.

  python -m bench.pruning_bench [--quick] [--seeds 0 1 2] [--samples 10000] [--resume]

The seed notebook prunes its student before quantizing. Here, per target
sparsity of the student's hidden Dense layers (config `pruning`, TF-MOT's
polynomial schedule; 0% is pruning off), the default KD student is trained by
the pipeline's own run_fn on the quality benchmark's first world (its pipeline
run, as bench/serving_bench.py uses it), under each training seed, and
quantized by the Quantizer's own executor (INT8). Recorded per sparsity:

  size:     the INT8 flatbuffer's bytes, raw and gzip-compressed (level 9): a
            flatbuffer stores a pruned kernel densely, so only compression can
            see its zeros; and the share of exact zeros in the int8 hidden
            kernels (pruning survives quantization: int8 0 is 0);
  quality:  Poisson NLL of the INT8 model on the scoring clicks (new clicks of
            the world, never trained on) against their true conversions, and its
            relative change vs sparsity 0, paired over clicks and seeds
            (bench/stats.py paired_relative; the 95% CI is the click-level delta
            method, since one world gives no between-world spread; the seed SD
            is beside it);
  latency:  seed 0's INT8 models at batch 1 and 256, invoke and per request,
            one thread, default delegates (XNNPACK), timed in alternation with
            bench/serving_bench.py's runner; quantiles with order-statistic CIs
            and p50 / p99.9 ratios to sparsity 0 with bootstrap CIs.

Writes bench/reported/pruning.json (--quick: bench/results/pruning/quick/);
`python -m bench.readme` writes the docs/benchmarks.md table from the committed JSON
(bench/pruning_report.py).
"""

import argparse
import dataclasses
import gzip
import os
import sys
import time
from typing import Dict, List

import numpy as np
import tensorflow as tf
from tfx.utils import path_utils

from bench import common
from bench import pruning_report
from bench import quality_bench
from bench import serving_bench
from bench import stats
from components.quantizer import convert
from models import nll
from schemas import columns

REPORTED = 'bench/reported/pruning.json'
RESULTS = 'bench/results/pruning'
STUDENT_RECIPE = 'kd_full'
SPARSITIES = pruning_report.SPARSITIES
BATCHES = pruning_report.BATCHES
MODES = pruning_report.MODES


def overrides(sparsity: float, seed: int) -> List[str]:
  extra = quality_bench.RECIPES[STUDENT_RECIPE] + [f'model.seed={seed}']
  if sparsity > 0:
    extra += ['pruning.enabled=true', f'pruning.target_sparsity={sparsity}']
  return extra


def student_name(sparsity: float, seed: int) -> str:
  return f'{pruning_report.key(sparsity)[:-1]}-s{seed}'


def int8_model(size, artifacts, out: str, sparsity: float, seed: int, resume: bool,
               log=print) -> bytes:
  """The INT8 student at `sparsity` under `seed` (trained and quantized here)."""
  name = student_name(sparsity, seed)
  student_dir = os.path.join(out, 'students', name)
  cfg = quality_bench.bench_config(size, quality_bench.FIRST_WORLD_SEED,
                                   overrides(sparsity, seed))
  if not (resume and os.path.exists(os.path.join(student_dir, 'saved_model.pb'))):
    t = time.time()
    quality_bench.train_student(cfg, artifacts, student_dir)
    log(f'{name}: trained in {time.time() - t:.0f}s')
  path = os.path.join(path_utils.serving_model_path(
      os.path.join(out, 'int8', name, 'model')), 'tflite')
  if not (resume and os.path.exists(path)):
    quality_bench.quantize(artifacts, student_dir, 'int8',
                           os.path.join(out, 'int8', name), cfg, latency_samples=20)
  with open(path, 'rb') as f:
    return f.read()


def float_hidden_zeros(student_dir: str) -> List[float]:
  """Share of exact zeros in the exported float student's hidden kernels."""
  variables = {v.name: v.numpy() for v in tf.saved_model.load(student_dir).variables}
  out, i = [], 0
  while f'dense_{i}/kernel:0' in variables:
    out.append(float((variables[f'dense_{i}/kernel:0'] == 0).mean()))
    i += 1
  return out


def hidden_zeros(model: bytes) -> List[float]:
  """Share of exact zeros in each FULLY_CONNECTED's weights but the last (the
  window heads, not pruned)."""
  it = convert.interpreter(model)
  ops = [op for op in it._get_ops_details()  # pylint: disable=protected-access
         if op['op_name'] == 'FULLY_CONNECTED']
  return [float((it.get_tensor(op['inputs'][1]) == 0).mean()) for op in ops[:-1]]


def time_models(models: Dict[str, bytes], rows, samples: int, log=print) -> Dict:
  """{model: {batch: {mode: [ns]}}}, one thread, models alternating in rounds."""
  out: Dict = {k: {} for k in models}
  for batch in BATCHES:
    requests = serving_bench.requests_of(rows, batch)
    runners = {k: serving_bench.TfliteRunner(m, batch, 1, rows, requests)
               for k, m in models.items()}
    times = {k: {m: [] for m in MODES} for k in models}
    for runner in runners.values():
      for mode in MODES:
        runner.time(serving_bench.WARMUP, mode)
    per_round = -(-samples // serving_bench.ROUNDS)
    t = time.time()
    for _ in range(serving_bench.ROUNDS):
      for k, runner in runners.items():
        for mode in MODES:
          times[k][mode].append(runner.time(per_round, mode))
    for k in models:
      out[k][str(batch)] = {m: np.concatenate(times[k][m])[:samples] for m in MODES}
    log(f'latency batch {batch}: {time.time() - t:.0f}s')
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.pruning_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='the quality benchmark\'s quick size, 1,000 timings per '
                      'point (development; not for quoting)')
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--samples', type=int,
                      help='timings per point (default 10,000; --quick 1,000)')
  parser.add_argument('--resume', action='store_true',
                      help='reuse students and INT8 models of an earlier run')
  parser.add_argument('--out', help=f'result JSON (default {REPORTED})')
  args = parser.parse_args(argv)
  samples = args.samples or (1_000 if args.quick else 10_000)
  t0 = time.time()
  size, cfg, artifacts, rows = quality_bench.first_world(args.quick)
  out_dir = os.path.join(RESULTS, size.name)
  os.makedirs(out_dir, exist_ok=True)
  y = rows[columns.TRUE_CONVERSIONS].astype(np.float64)

  keys = [pruning_report.key(s) for s in SPARSITIES]
  models: Dict[str, Dict] = {}
  losses: Dict[str, List[np.ndarray]] = {k: [] for k in keys}
  seed0: Dict[str, bytes] = {}
  for s, k in zip(SPARSITIES, keys):
    for seed in args.seeds:
      model = int8_model(size, artifacts, out_dir, s, seed, args.resume)
      losses[k].append(nll.poisson_nll_per_example(y, convert.predict(model, rows)))
      if seed == args.seeds[0]:
        seed0[k] = model
        models[k] = {'bytes': len(model), 'gzip_bytes': len(gzip.compress(model, 9)),
                     'float_hidden_zeros': float_hidden_zeros(os.path.join(
                         out_dir, 'students', student_name(s, seed))),
                     'int8_hidden_zeros': hidden_zeros(model),
                     'ops': serving_bench.op_summary(model)['op_count']}
    print(k, models[k], f'NLL {np.mean(losses[k]):.6f}', flush=True)

  quality = {'clicks': int(y.size), 'nll': {k: float(np.mean(v))
                                              for k, v in losses.items()},
             'vs_sparsity_0': {}}
  base = np.stack(losses[keys[0]])
  for k in keys[1:]:
    r = stats.paired_relative([np.stack(losses[k])], [base])
    half = 1.96 * r['click_se']
    quality['vs_sparsity_0'][k] = {
        'mean': r['mean'], 'ci95': [r['mean'] - half, r['mean'] + half],
        'click_se': r['click_se'], 'seed_sd': r['seed_sd'], 'seeds': len(args.seeds),
        'per_seed': [float(((a - b).sum()) / b.sum())
                     for a, b in zip(losses[k], losses[keys[0]])]}

  times = time_models(seed0, rows, samples)
  latency = {k: d['1'] for k, d in serving_bench.summarize(
      {k: {'1': t} for k, t in times.items()}).items()}
  ratios = {k: serving_bench.ratios({k: {'1': times[k]}, keys[0]: {'1': times[keys[0]]}},
                                    k, keys[0])['1'] for k in keys[1:]}
  result = {**common.provenance(cfg), 'quick': args.quick,
            'size': dataclasses.asdict(size), 'student': STUDENT_RECIPE,
            'seeds': list(args.seeds), 'sparsities': list(SPARSITIES),
            'pruning': {k: v for k, v in dataclasses.asdict(cfg.pruning).items()
                        if k not in ('enabled', 'target_sparsity')},
            'samples': samples, 'threads': 1,
            'delegates': 'default (XNNPACK)', 'models': models, 'quality': quality,
            'latency': latency, 'ratios': ratios, 'tensorflow': tf.__version__,
            'seconds': time.time() - t0}
  out = args.out or (os.path.join(out_dir, 'pruning.json') if args.quick else REPORTED)
  common.write_json(out, result)
  print(pruning_report.markdown(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
