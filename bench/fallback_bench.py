"""The lag-cost curve: teacher lag 0, 24, 40 and 72 h on one world, each with its
distilled student's quality and failed fraction (docs/architecture.md §12).

  python -m bench.fallback_bench [--lags 0 24 40 72] [--out ...]

One world (the quality benchmark's first world seed) at a reduced size (SIZE
below: the whole curve fits ~25 minutes on 2 shared cores). Per lag the DAG runs
once as a bootstrap (ExampleGen, the teacher trained on clicks up to T - lag, its
BulkInferrer; the nodes after it are not run); the KD student (kd_full) is trained on its examples with the
pipeline's run_fn and quantized to INT8 by the Quantizer's executor. The
production student (the fallback: what serving has when the candidate fails)
reads no teacher column, so it is trained once.

Scoring clicks are new clicks of the world on its last four days, so their ages
span every lag's cutoff T - lag; they are never trained on. Half calibrate the
band (models/fallback.py, around the INT8 production student), the other half
score it: the band's coverage of the true rate, and the KD student's failed
fraction overall, by observability slice, tCPA bucket and age relative to the
cutoff. Quality: the excess risk against the true rate (the Poisson KL,
models/nll.py) relative to the production student, paired over the same clicks,
with bench/stats.py's click-level SE (one world: no between-world spread, so the
interval is the click noise only, +-1.96 SE).
"""

import argparse
import dataclasses
import os
import sys
import time
from typing import Dict, List

import numpy as np
from tfx.orchestration.beam import beam_dag_runner
from tfx.utils import path_utils

from bench import common
from bench import quality_bench as qb
from bench import stats
from components.quantizer import convert
import config as config_lib
from models import fallback
from models import nll
from pipeline import local
from observation import labels
from schemas import columns
from world import generator
from world import synthetic

RESULTS = 'bench/results/fallback'
REPORTED = 'bench/reported/fallback.json'
LAGS = (0, 24, 40, 72)
SIZE = qb.Size(name='fallback', worlds=1, seeds=1, clicks=30_000,
               scoring_clicks=80_000, teacher_steps=400, student_steps=300)
SCORING_DAYS = 4
# The default level and a narrower one: at 0.9 the band (which must hold 90% of
# the true rates, teacher-only signal included) is wide and rarely fails a
# student; at 0.5 the failed fraction shows how lag moves the student.
LEVELS = (config_lib.FallbackConfig().level, 0.5)


def lag_config(lag: float, extra=()):
  root = f'{RESULTS}/lag-{lag:g}'
  return config_lib.load_config('pipeline/configs/default.yaml', [
      f'world.seed={qb.FIRST_WORLD_SEED}', f'world.num_clicks={SIZE.clicks}',
      # One world for every lag: the data are shared, the outputs are not.
      f'paths.data_root={RESULTS}/data', f'paths.output_root={root}/outputs',
      f'paths.serving_dir={root}/serving', 'teacher_gate.calibration_band=0',
      f'window.teacher_lag_hours={lag:g}',
  ] + qb.training_overrides(SIZE) + list(extra))


def scoring(cfg) -> Dict[str, np.ndarray]:
  """New clicks on the world's last SCORING_DAYS days, with T and the slices."""
  world = generator.World(cfg)
  start = int(cfg.world.start().timestamp())
  parts = []
  per_day = SIZE.scoring_clicks // SCORING_DAYS
  for d in range(SCORING_DAYS):
    day = cfg.world.days - SCORING_DAYS + d
    parts.append(world.scoring_clicks(per_day, start + day * generator.SECONDS_PER_DAY,
                                      stream=10 + d, first_id=-1 - d * per_day))
  rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  spec = cfg.label_spec()
  rows[columns.SNAPSHOT_TS] = np.full(len(rows[columns.CLICK_ID]),
                                      start + cfg.world.days * generator.SECONDS_PER_DAY,
                                      np.int64)
  rows[columns.OBSERVED_FRACTION] = labels.observed_fraction(rows[synthetic.BROWSER], spec)
  rows[columns.BROWSER_OBSERVABILITY] = labels.observability_bucket(
      rows[columns.OBSERVED_FRACTION], spec)
  rows[columns.TCPA_BUCKET] = labels.tcpa_bucket(rows[synthetic.TARGET_CPA])
  return rows


# What a lag changes: the teacher and the BulkInferrer's teacher columns. The
# nodes after the BulkInferrer (student, Quantizer, Evaluator, Promotion,
# Pusher) are not run: the bench trains its own students.
UPSTREAM = ('ConversionLogExampleGen', 'ServedBaseline', 'StatisticsGen',
            'ImportSchemaGen', 'ExampleValidator', 'DataGate', 'Transform', 'teacher',
            'TeacherGate', 'BulkInferrer')


def run_upstream(cfg) -> None:
  """The DAG up to the BulkInferrer (a bootstrap; BeamDagRunner as `make run`)."""
  p = local.build(cfg, bootstrap=True)
  kept = [c for c in p.components if c.id in UPSTREAM]
  for c in kept:
    for down in [d for d in c.downstream_nodes if d.id not in UPSTREAM]:
      c.remove_downstream_node(down)
  p.components = kept
  beam_dag_runner.BeamDagRunner().run(p)


def artifacts_for(cfg) -> Dict:
  """qb.run_pipeline's artifacts, running the upstream DAG if not done yet."""
  paths = local.LocalPaths.from_config(cfg)
  if not (os.path.exists(paths.metadata) and local.node_outputs(
      paths.metadata, cfg.pipeline_name, 'BulkInferrer').get('output_examples')):
    run_upstream(cfg)
  return qb.run_pipeline(cfg)


def int8_predictions(lag: float, artifacts, recipe: str, name: str,
                     rows) -> np.ndarray:
  """Trains `recipe`'s student on `lag`'s examples, quantizes it to INT8 with the
  Quantizer's executor and predicts `rows` (cached under RESULTS/students)."""
  out = os.path.join(RESULTS, 'students', name)
  cached = os.path.join(out, 'pred.npy')
  if os.path.exists(cached):
    return np.load(cached)
  cfg = lag_config(lag, qb.RECIPES[recipe])
  qb.train_student(cfg, artifacts, os.path.join(out, 'float'))
  qb.quantize(artifacts, os.path.join(out, 'float'), 'int8', os.path.join(out, 'int8'),
              cfg, latency_samples=100)
  tflite = os.path.join(path_utils.serving_model_path(
      os.path.join(out, 'int8', 'model')), 'tflite')
  with open(tflite, 'rb') as f:
    pred = convert.predict(f.read(), rows)
  np.save(cached, pred)
  return pred


def naive_failed(candidate, reference, rows, truth, level) -> Dict:
  """The KD student's failed fraction by observability slice against a naive
  band: one multiplier pair for every browser, fitted where every conversion is
  observed (f_b = 1), i.e. production's own error, blind to the correction."""
  cal = fallback.calibration_mask(rows[columns.CLICK_ID])
  full = rows[columns.BROWSER_OBSERVABILITY] == 'full'
  fit = cal & full
  band = fallback.fit(reference[fit], truth[fit], np.zeros(fit.sum()), level, 1)
  test = ~cal
  lower, upper = band.bounds(reference[test], np.zeros(test.sum()))
  return fallback.by_slice(fallback.failed(candidate[test], lower, upper), {
      columns.BROWSER_OBSERVABILITY: rows[columns.BROWSER_OBSERVABILITY][test]})


def quality(truth: np.ndarray, pred: np.ndarray, ref: np.ndarray) -> Dict:
  """Excess risk and its change vs the reference, with the click-level CI."""
  a = nll.excess_risk_per_example(truth, pred)[None, :]
  b = nll.excess_risk_per_example(truth, ref)[None, :]
  rel = stats.paired_relative([a], [b])
  se = rel['click_se']
  return {'excess_risk': float(a.mean()), 'reference_excess_risk': float(b.mean()),
          'relative_to_production': rel['mean'],
          'ci95_click': [rel['mean'] - 1.96 * se, rel['mean'] + 1.96 * se],
          'click_se': se}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.fallback_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--lags', type=float, nargs='+', default=list(LAGS))
  parser.add_argument('--levels', type=float, nargs='+', default=list(LEVELS))
  parser.add_argument('--out', default=REPORTED)
  args = parser.parse_args(argv)
  t0 = time.time()
  base = lag_config(args.lags[0])
  if generator.read_manifest(base.paths.data_root) is None:
    generator.generate(base, base.paths.data_root)
  rows = scoring(base)
  truth = fallback.true_rate(rows)
  n_keys = len(base.observability.browsers)
  curve, reference, seconds = [], None, {}
  for lag in args.lags:
    t = time.time()
    cfg = lag_config(lag)
    artifacts = artifacts_for(cfg)
    if reference is None:
      # The production recipe reads no teacher column: one fallback for all lags.
      reference = int8_predictions(lag, artifacts, 'production', 'production', rows)
    kd = int8_predictions(lag, artifacts, 'kd_full', f'kd_full-lag{lag:g}', rows)
    test = ~fallback.calibration_mask(rows[columns.CLICK_ID])
    row = {'teacher_lag_hours': lag,
           'quality': quality(truth[test], kd[test], reference[test]), 'levels': {}}
    for level in args.levels:
      band, report = fallback.evaluate(kd, reference, rows, level, n_keys,
                                       lag_seconds=cfg.window.teacher_lag_seconds(),
                                       key=synthetic.BROWSER,
                                       slices=cfg.dataset.slice_columns())
      row['levels'][f'{level:g}'] = {'failed': report['failed'],
                                     'coverage': report['coverage'],
                                     'band': band.to_dict(),
                                     'naive_failed': naive_failed(kd, reference, rows,
                                                                  truth, level)}
      print(f'lag {lag:g} h, level {level:g}: failed '
            f'{report["failed"]["overall"]["mean"]:.3f}, coverage '
            f'{report["coverage"]["overall"]["mean"]:.3f}', flush=True)
    curve.append(row)
    seconds[f'{lag:g}'] = time.time() - t
    print(f'lag {lag:g} h: excess risk vs production '
          f'{row["quality"]["relative_to_production"]:+.3f} '
          f'({seconds[f"{lag:g}"]:.0f} s)', flush=True)
  result = {'size': dataclasses.asdict(SIZE), 'scoring_days': SCORING_DAYS,
            'levels': args.levels, 'reference': 'production (INT8)',
            'candidate': 'kd_full (INT8)', 'curve': curve,
            'seconds': time.time() - t0, 'seconds_per_lag': seconds}
  result.update(common.provenance(base))
  common.write_json(args.out, result)
  print(markdown(result))
  return 0


def _pct(x: float) -> str:
  return f'{100 * x:.1f}%'


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md lag-cost table."""
  s = result['size']
  levels = [f'{x:g}' for x in result['levels']]
  lines = [
      f'One world ({s["clicks"]:,} clicks, teacher {s["teacher_steps"]} / student '
      f'{s["student_steps"]} steps), {s["scoring_clicks"]:,} new scoring clicks over '
      f'the last {result["scoring_days"]} days: half calibrate the band around the '
      f'production student (the fallback), half are scored. KD student and '
      f'fallback both INT8. KD vs production: excess risk against the true rate, '
      f'relative, with the click-level 95% CI (one world: no world or seed '
      f'noise in it). Failed: the KD student outside the band at level '
      f'{" / ".join(levels)}; before / after: clicks at or before / after the '
      f'cutoff T - lag. Coverage: the band\'s share of true rates inside it. Naive band: one '
      f'multiplier pair for every browser, fitted where f_b = 1 (production\'s '
      f'own error): it flags the observability correction. '
      f'Run time {result.get("seconds_total", result["seconds"]) / 60:.0f} min '
      f'(`make bench-fallback`).',
      '',
      '| teacher lag | KD vs production | failed | failed, low obs. | failed, '
      'before cutoff | failed, after cutoff | failed, tCPA > 250 | coverage '
      '(low obs.) | failed, low obs., naive band |',
      '|---|---|---|---|---|---|---|---|---|']

  def cells(row, group, key):
    out = []
    for level in levels:
      g = row['levels'][level]['failed'].get(group, {}).get(key)
      out.append(_pct(g['mean']) if g else '-')
    return ' / '.join(out)
  for row in result['curve']:
    q = row['quality']
    overall = ' / '.join(_pct(row['levels'][x]['failed']['overall']['mean'])
                         for x in levels)
    cover = ' / '.join(
        f'{_pct(row["levels"][x]["coverage"]["overall"]["mean"])} ('
        f'{_pct(row["levels"][x]["coverage"][columns.BROWSER_OBSERVABILITY][columns.LOW_OBSERVABILITY_BUCKET]["mean"])})'
        for x in levels)
    lines.append(
        f'| {row["teacher_lag_hours"]:g} h | {_pct(q["relative_to_production"])} '
        f'[{_pct(q["ci95_click"][0])}, {_pct(q["ci95_click"][1])}] | {overall} | '
        f'{cells(row, columns.BROWSER_OBSERVABILITY, columns.LOW_OBSERVABILITY_BUCKET)} | '
        f'{cells(row, fallback.AGE, fallback.BEFORE_CUTOFF)} | '
        f'{cells(row, fallback.AGE, fallback.AFTER_CUTOFF)} | '
        f'{cells(row, columns.TCPA_BUCKET, columns.HIGH_TCPA_BUCKET)} | {cover} | '
        + ' / '.join(_pct(row['levels'][x]['naive_failed'][columns.BROWSER_OBSERVABILITY]
                          [columns.LOW_OBSERVABILITY_BUCKET]['mean']) for x in levels)
        + ' |')
  return '\n'.join(lines)


if __name__ == '__main__':
  sys.exit(main())
