"""Quality benchmark: Poisson NLL of every recipe on one fixed world (issue 4).

  python -m bench.quality_bench [--clicks 640000] [--seeds 0] [--reuse]

1. Generates the benchmark world (if absent) and runs the pipeline (the same
   create_pipeline, BeamDagRunner) up to the teacher's columns.
2. Trains each student recipe with the pipeline's own student run_fn on the
   BulkInferrer's examples.
3. Scores everything on the eval split against the true total conversions with the
   reference NLL (models/nll.py): overall, tCPA > 250 and low observability; the
   relative change vs the production recipe, and the share of the teacher's gain
   over production each recovers.
Writes bench/results/quality.json (seed, config, git SHA) and a Markdown table.
"""

import argparse
import os
import sys
import types
from typing import Dict, List

import numpy as np
import tensorflow as tf
from tfx.utils import path_utils

from bench import common
import config as config_lib
from models import export
from models import glm as glm_lib
from models import nll
from models import student_trainer
from observation import labels
from pipeline import local
from schemas import columns
from schemas import records
from world import generator

RESULTS = 'bench/results'
# Each recipe: config overrides on top of the benchmark config.
KD_OFF = ['distill.aux_weight=0', 'distill.hint_weight=0', 'distill.tcpa_beta=0']
RECIPES = {
    'production': ['distill.recipe=production'],
    'offset': ['distill.recipe=offset'],
    'kd_output': ['distill.recipe=kd'] + KD_OFF,
    'kd_aux': ['distill.recipe=kd', 'distill.hint_weight=0', 'distill.tcpa_beta=0'],
    'kd_aux_hint': ['distill.recipe=kd', 'distill.tcpa_beta=0'],
    'kd_full': ['distill.recipe=kd'],
}
LABELS = {
    'floor': 'Bayes floor (true rate)',
    'serving_floor': 'serving-only Bayes floor (E[rate | serving features])',
    'glm': 'Poisson GLM (serving features, observability offset)',
    'teacher': 'teacher (serving + teacher-only features)',
    'production': 'student: production recipe (no teacher, no observability)',
    'offset': 'student: observability offset, no teacher',
    'kd_output': 'student: KD, output distillation',
    'kd_aux': 'student: KD + auxiliary head',
    'kd_aux_hint': 'student: KD + aux + hint',
    'kd_full': 'student: KD + aux + hint + tCPA weights (default)',
}


# The benchmark's training recipe, the same for every model (found by sweeps on
# this world; the default config keeps make run short): longer training, a higher
# student learning rate, lighter L2.
TRAINING = [
    'model.teacher.train_steps=8000', 'model.teacher.l2=1e-4',
    'model.student.train_steps=8000', 'model.student.learning_rate=0.003',
    'model.student.l2=3e-5',
]


def bench_config(clicks: int, extra=()):
  return config_lib.load_config('pipeline/configs/default.yaml', [
      f'world.num_clicks={clicks}',
      f'paths.data_root={RESULTS}/data/world-{clicks}',
      f'paths.output_root={RESULTS}/outputs-{clicks}',
      f'paths.serving_dir={RESULTS}/serving-{clicks}',
      'beam.direct_running_mode=multi_processing',
  ] + TRAINING + list(extra))


def run_pipeline(cfg, reuse: bool):
  """Generates the world and runs the whole DAG as a bootstrap (the production
  recipe, quantized, evaluated and pushed); returns the run's artifacts."""
  paths = local.LocalPaths.from_config(cfg)
  if generator.read_manifest(cfg.paths.data_root) is None:
    generator.generate(cfg, cfg.paths.data_root)
  if not (reuse and os.path.exists(paths.metadata)):
    local.run(cfg, bootstrap=True)

  def artifact(node, key):
    (a,) = local.node_outputs(paths.metadata, cfg.pipeline_name, node)[key]
    return a
  return {
      'inferred': artifact('BulkInferrer', 'output_examples').uri,
      'transform': artifact('Transform', 'transform_graph').uri,
      'schema': os.path.join(artifact('ImportSchemaGen', 'schema').uri, 'schema.pbtxt'),
      'teacher': artifact('teacher', 'model').uri,
      'gate': dict(artifact('TeacherGate', 'result').custom_properties),
      'executions': local.node_executions(paths.metadata, cfg.pipeline_name),
  }


def train_student(cfg, artifacts, out_dir: str) -> str:
  """The pipeline's student run_fn on the pipeline's artifacts."""
  fn_args = types.SimpleNamespace(
      train_files=[os.path.join(artifacts['inferred'], 'Split-train', '*')],
      eval_files=[os.path.join(artifacts['inferred'], 'Split-eval', '*')],
      train_steps=cfg.model.student.train_steps,
      eval_steps=max(1, cfg.model.student.train_steps // 20),
      transform_graph_path=artifacts['transform'], schema_path=artifacts['schema'],
      serving_model_dir=out_dir, base_model=None,
      custom_config={'config': cfg.to_json()})
  student_trainer.run_fn(fn_args)
  return out_dir


def predict(model_dir: str, serialized: List[bytes]) -> np.ndarray:
  serve = tf.saved_model.load(model_dir).signatures[export.SERVING_SIGNATURE]
  return np.concatenate([
      serve(examples=tf.constant(serialized[i:i + 8192]))[export.PCONVS].numpy()
      for i in range(0, len(serialized), 8192)]).astype(np.float64)


def glm_predictions(artifacts, eval_rows) -> np.ndarray:
  """Per-window Poisson GLMs with the observability offset, L2 chosen on the last
  two days of the train split against their reported counts."""
  train = records.read_examples(os.path.join(artifacts['inferred'], 'Split-train'))
  valid = train[columns.CLICK_TS] >= train[columns.CLICK_TS].max() - 2 * 86400
  fit = {k: v[~valid] for k, v in train.items()}
  hold = {k: v[valid] for k, v in train.items()}
  total = 0.0
  for label, exposure in zip(columns.LABELS, columns.EXPOSURES):
    o_fit = fit[exposure] * fit[columns.OBSERVED_FRACTION]
    o_hold = hold[exposure] * hold[columns.OBSERVED_FRACTION]
    glm = glm_lib.best_glm(fit, fit[label], hold, hold[label],
                           columns.SERVING_FEATURES, exposure=o_fit,
                           valid_exposure=o_hold)
    total = total + glm.predict(eval_rows)
  return total


def score(pred: np.ndarray, eval_rows) -> Dict[str, float]:
  y = eval_rows[columns.TRUE_CONVERSIONS].astype(np.float64)
  rate = sum(eval_rows[c].astype(np.float64) for c in columns.TRUE_RATES)
  slices = {
      'overall': np.ones(len(y), bool),
      'tcpa_gt_250': eval_rows[columns.TCPA_BUCKET] == labels.HIGH_TCPA_BUCKET,
      'low_observability': eval_rows[columns.BROWSER_OBSERVABILITY] ==
                           labels.LOW_OBSERVABILITY_BUCKET,
  }
  out = {}
  for name, mask in slices.items():
    out[name] = nll.poisson_nll(y[mask], pred[mask])
    out[f'{name}_examples'] = int(mask.sum())
  out['calibration'] = float(pred.mean() / rate.mean())
  return out


def relative(result: Dict) -> None:
  """Adds change vs production and share of the teacher's gain recovered."""
  prod, teacher = result['rows']['production'], result['rows']['teacher']
  for row in result['rows'].values():
    for s in ('overall', 'tcpa_gt_250', 'low_observability'):
      row[f'{s}_vs_production'] = nll.relative_change(row[s], prod[s])
      gain = prod[s] - teacher[s]
      row[f'{s}_teacher_gain_recovered'] = (prod[s] - row[s]) / gain if gain else None


def markdown(result: Dict) -> str:
  lines = [
      f'World: {result["clicks"]:,} clicks (seed {result["seed"]}); eval split: '
      f'{result["rows"]["floor"]["overall_examples"]:,} clicks, '
      f'{result["rows"]["floor"]["tcpa_gt_250_examples"]:,} with tCPA > 250, '
      f'{result["rows"]["floor"]["low_observability_examples"]:,} on low-observability '
      'browsers. Poisson NLL per click against the true total conversions '
      '(lower is better); change vs the production recipe; share of the '
      'teacher\'s gain over production recovered. The serving-only floor is the '
      'best any model without the teacher-only signals can reach.', '',
      '| model | NLL | vs prod | tCPA > 250 | vs prod | low obs. | vs prod | '
      'teacher gain recovered | calibration |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for key, row in result['rows'].items():
    rec = row.get('overall_teacher_gain_recovered')
    lines.append(
        f'| {LABELS[key]} | {row["overall"]:.5f} | {100 * row["overall_vs_production"]:+.2f}% '
        f'| {row["tcpa_gt_250"]:.5f} | {100 * row["tcpa_gt_250_vs_production"]:+.2f}% '
        f'| {row["low_observability"]:.5f} | '
        f'{100 * row["low_observability_vs_production"]:+.2f}% | '
        f'{"" if rec is None else f"{100 * rec:.0f}%"} | {row["calibration"]:.3f} |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.quality_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--clicks', type=int, default=640_000,
                      help='world size (the 28-day window holds 80%%)')
  parser.add_argument('--recipes', nargs='+', default=list(RECIPES))
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='KEY=VALUE', help='extra config overrides (all runs)')
  parser.add_argument('--reuse', action='store_true',
                      help='reuse an existing pipeline run of the same world')
  parser.add_argument('--out', default=f'{RESULTS}/quality.json')
  args = parser.parse_args(argv)
  cfg = bench_config(args.clicks, args.overrides)
  # The pipeline's own student is not scored: every recipe is trained below.
  artifacts = run_pipeline(
      bench_config(args.clicks, args.overrides + RECIPES['production']), args.reuse)
  eval_dir = os.path.join(artifacts['inferred'], 'Split-eval')
  serialized = records.read_records(eval_dir)
  eval_rows = records.read_examples(eval_dir)

  rows = {'floor': score(sum(eval_rows[c].astype(np.float64)
                             for c in columns.TRUE_RATES), eval_rows),
          # E[rate | serving features]: the best any student could do.
          'serving_floor': score(generator.World(cfg).serving_rate(eval_rows),
                                 eval_rows)}
  rows['glm'] = score(glm_predictions(artifacts, eval_rows), eval_rows)
  rows['teacher'] = score(predict(path_utils.serving_model_path(artifacts['teacher']),
                                  serialized), eval_rows)
  summaries = {}
  for name in args.recipes:
    recipe_cfg = bench_config(args.clicks, args.overrides + RECIPES[name])
    model_dir = train_student(recipe_cfg, artifacts,
                              os.path.join(RESULTS, 'students', name))
    rows[name] = score(predict(model_dir, serialized), eval_rows)
    summaries[name] = export.read_summary(model_dir)
    print(f'{name}: {rows[name]}', flush=True)
  result = {**common.provenance(cfg), 'clicks': args.clicks, 'rows': rows,
            'recipes': {k: RECIPES[k] for k in args.recipes},
            'student_summaries': summaries,
            'pipeline_seconds': {e['node']: e['seconds'] for e in artifacts['executions']}}
  if 'production' in rows:
    relative(result)
    text = markdown(result)
    with open(args.out.replace('.json', '.md'), 'w') as f:
      f.write(text + '\n')
    print(text)
  common.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
