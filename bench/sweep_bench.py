"""Sweep benchmark: does selecting on the tune split's observed loss pick what the
truth would, and does the chosen configuration beat the defaults on worlds the
selection never saw? (docs/architecture.md §13, issue 15)

  nice -n 10 python -m bench.sweep_bench [--trials 8] [--unseen 3] [--seeds 2]

1. Selection world (seed 42): the DAG's bootstrap with a tune split
   (sweep.tune_fraction), then the sweep: StudentTuner (the Tuner's own
   BaseTuner) trains each trial with the student's training code and scores it
   on the tune split; each trial is also scored against the true rates on a
   held-out scoring set (excess risk), which selection never sees.
2. Unseen worlds (seeds 43..): the same DAG; the defaults and the chosen values
   trained under each training seed, paired, scored by excess risk on each
   world's scoring set; bench/stats.paired_relative gives the CI over worlds.

Sizes are reduced (the quick world: 30k clicks, teacher 400 steps; the size is
in the JSON): the machine is 2 shared cores. Output: bench/reported/sweep.json;
bench/readme.py writes the docs/benchmarks.md table from it.
"""

import argparse
import json
import os
import tempfile
import time
import types
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from bench import common
from bench import quality_bench
from bench import stats
from bench import sweep_report
import config as config_lib
from models import data
from models import hparams
from models import nll
from models import student_trainer
from models import student_tuner
from models import features as features_lib
from models import towers
from schemas import columns
from world import synthetic

RESULTS = 'bench/results/sweep'
REPORTED = sweep_report.REPORTED
SELECTION_WORLD = 42
TUNE_FRACTION = 0.1


def bench_config(size, world_seed: int, extra: Sequence[str] = ()):
  """quality_bench's config for the world, its own results, a tune split."""
  root = f'{RESULTS}/{size.name}/world-{world_seed}'
  return config_lib.load_config('pipeline/configs/default.yaml', [
      f'world.seed={world_seed}', f'world.num_clicks={size.clicks}',
      f'paths.data_root={root}/data', f'paths.output_root={root}/outputs',
      f'paths.serving_dir={root}/serving', f'paths.sweeps_dir={root}/sweeps',
      'teacher_gate.calibration_band=0', f'sweep.tune_fraction={TUNE_FRACTION}',
  ] + quality_bench.training_overrides(size) + list(extra))


def pipeline_run(size, world_seed: int) -> Dict:
  """The world's bootstrap DAG (its own student, unused, trains briefly)."""
  return quality_bench.run_pipeline(bench_config(size, world_seed, [
      'model.student.train_steps=100',
      # Only the BulkInferrer's examples are used: the rest of the bootstrap
      # (Evaluator intervals, latency timings) is kept cheap.
      'gate.confidence_intervals=false', 'promotion.latency_samples=100',
      'quantizer.latency_samples=10']))


def fn_args_for(cfg, artifacts, eval_split: str):
  """What the Trainer / Tuner executors would pass (train split: train)."""
  inferred = artifacts['inferred']
  return types.SimpleNamespace(
      train_files=[os.path.join(inferred, 'Split-train', '*')],
      eval_files=[os.path.join(inferred, f'Split-{eval_split}', '*')],
      train_steps=cfg.model.student.train_steps,
      eval_steps=max(1, cfg.model.student.train_steps // 20),
      transform_graph_path=artifacts['transform'], schema_path=artifacts['schema'],
      base_model=None, custom_config=config_lib.trainer_custom_config(cfg))


class Scorer:
  """Predicted total rates of a trained network on a world's scoring clicks."""

  def __init__(self, rows: Dict[str, np.ndarray]):
    self.rate = sum(rows[c].astype(np.float64) for c in synthetic.TRUE_RATES)
    spec = data.column_spec(synthetic.SERVING_FEATURES)
    self.parsed = []
    examples = quality_bench.serialized(rows)
    for i in range(0, len(examples), 8192):
      self.parsed.append(tf.io.parse_example(tf.constant(examples[i:i + 8192]), spec))

  def excess_risk(self, network, tft_layer) -> np.ndarray:
    out = []
    for batch in self.parsed:
      transformed = tft_layer(batch)
      got = network({n: transformed[n] for n in synthetic.SERVING_FEATURES},
                     training=False)
      out.append(np.exp(np.asarray(got[towers.LOG_RATES], np.float64)).sum(1))
    return nll.excess_risk_per_example(self.rate, np.concatenate(out))


def trial_fn(scorer: Scorer, store: Dict):
  """A StudentTuner trial: the sweep's own scoring, plus the truth beside it."""
  def run(cfg, fn_args):
    t = time.time()
    trained = student_trainer.train(cfg, fn_args)
    score = student_trainer.tune_score(cfg, trained.network, trained.tft_layer,
                                       fn_args.eval_files, trained.schema_path)
    er = scorer.excess_risk(trained.network, trained.tft_layer)
    metrics = {student_tuner.OBJECTIVE: score['nll'],
               student_tuner.TRAIN_LOSS: float(trained.history.history['loss'][-1]),
               'excess_risk': float(er.mean()), 'seconds': time.time() - t,
               'tune_examples': float(score['examples'])}
    store['mode'] = score['mode']
    return metrics
  return run


def rank_agreement(trials: List[Dict]) -> Dict:
  """Spearman's rho between tune NLL and excess risk, and the regret of the
  tune-selected trial (its excess risk over the best trial's)."""
  tune = np.array([t[student_tuner.OBJECTIVE] for t in trials])
  er = np.array([t['excess_risk'] for t in trials])
  rank = lambda x: np.argsort(np.argsort(x))
  rho = float(np.corrcoef(rank(tune), rank(er))[0, 1]) if len(trials) > 2 else None
  picked = trials[int(np.argmin(tune))]
  truth = trials[int(np.argmin(er))]
  train = trials[int(np.argmin([t[student_tuner.TRAIN_LOSS] for t in trials]))]
  return {'spearman_tune_vs_excess_risk': rho,
          'selected_trial': picked['trial_id'],
          'truth_best_trial': truth['trial_id'],
          'train_loss_best_trial': train['trial_id'],
          'regret_excess_risk': picked['excess_risk'] - truth['excess_risk'],
          'regret_of_train_loss_selection': train['excess_risk'] - truth['excess_risk']}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=8)
  parser.add_argument('--unseen', type=int, default=3)
  parser.add_argument('--seeds', type=int, default=2)
  parser.add_argument('--scoring-clicks', type=int, default=50_000)
  parser.add_argument('--steps', default='150,300,600',
                      help='sweep.train_steps values (the quick world trains 300)')
  parser.add_argument('--worlds', type=int, nargs='*',
                      help='unseen world seeds (default: the --unseen after 42)')
  parser.add_argument('--resume', action='store_true',
                      help='take the sweep (phase 1) from bench/reported/sweep.json')
  args = parser.parse_args(argv)
  worlds = args.worlds or list(range(SELECTION_WORLD + 1,
                                     SELECTION_WORLD + 1 + args.unseen))
  size = quality_bench.SIZES['quick']
  t0 = time.time()
  sweep_overrides = [f'sweep.trials={args.trials}', 'sweep.seed=0',
                     f'sweep.train_steps=[{args.steps}]']

  # 1. The sweep on the selection world.
  cfg = bench_config(size, SELECTION_WORLD, sweep_overrides)
  if args.resume:
    with open(REPORTED) as f:
      result = json.load(f)
    return compare(args, size, worlds, result, time.time())
  artifacts = pipeline_run(size, SELECTION_WORLD)
  scorer = Scorer(quality_bench.scoring_set(cfg, args.scoring_clicks))
  store: Dict = {}
  fn_args = fn_args_for(cfg, artifacts, 'tune')
  with tempfile.TemporaryDirectory() as d:
    tuner = student_tuner.StudentTuner(cfg, fn_args, trial_fn=trial_fn(scorer, store),
                                       directory=d, project_name='sweep',
                                       overwrite=True)
    tuner.search()
    trials = tuner.trials
    best = hparams.values_of(tuner.get_best_hyperparameters()[0].get_config())
  sweep_seconds = sum(t['seconds'] for t in trials)
  defaults = dict(hparams.effective(cfg))
  print(json.dumps({'best': best, 'defaults': defaults}), flush=True)
  result = {
      'issue': 15,
      'size': {'clicks': size.clicks, 'teacher_steps': size.teacher_steps,
               'student_steps_default': size.student_steps,
               'scoring_clicks': args.scoring_clicks, 'trials': args.trials,
               'algorithm': 'random', 'tune_fraction': TUNE_FRACTION,
               'selection_world': SELECTION_WORLD, 'unseen_worlds': args.unseen,
               'training_seeds': args.seeds},
      'tune_score_mode': store.get('mode'),
      'search_space': cfg.sweep.space(),
      'trials': trials,
      'selection': rank_agreement(trials),
      'chosen': best, 'defaults': defaults,
      'per_world': [],
      'sweep_trial_seconds': sweep_seconds,
      'provenance': common.provenance(cfg),
  }
  # Written after each phase: a run stopped early keeps what it measured.
  result['seconds'] = time.time() - t0
  common.write_json(REPORTED, result)
  return compare(args, size, worlds, result, time.time())


def compare(args, size, worlds: Sequence[int], result: Dict, t0: float) -> int:
  """2. Defaults vs chosen on unseen worlds, paired by training seed."""
  best = result['chosen']
  result['size'].update(unseen_worlds=len(worlds), training_seeds=args.seeds,
                        unseen_world_seeds=list(worlds))
  a, b, per_world = [], [], []
  for world in worlds:
    wcfg = bench_config(size, world)
    wart = pipeline_run(size, world)
    wscorer = Scorer(quality_bench.scoring_set(wcfg, args.scoring_clicks))
    chosen_er, default_er = [], []
    for seed in range(args.seeds):
      for values, out in ((best, chosen_er), ({}, default_er)):
        scfg = hparams.apply(bench_config(size, world, [f'model.seed={seed}']), values)
        sargs = fn_args_for(scfg, wart, 'eval')
        tf.keras.backend.clear_session()
        trained = student_trainer.train(scfg, sargs)
        out.append(wscorer.excess_risk(trained.network, trained.tft_layer))
    a.append(np.stack(chosen_er))
    b.append(np.stack(default_er))
    per_world.append({'world_seed': world,
                      'chosen_excess_risk': float(np.mean(chosen_er)),
                      'default_excess_risk': float(np.mean(default_er))})
    print(json.dumps(per_world[-1]), flush=True)
    result['per_world'] = per_world
    # Negative: the chosen values have lower excess risk than the defaults.
    result['chosen_vs_defaults_excess_risk'] = stats.paired_relative(a, b)
    result['compare_seconds'] = result.get('compare_seconds', 0.0) + (
        time.time() - t0)
    t0 = time.time()
    common.write_json(REPORTED, result)
  print(f'wrote {REPORTED}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
