"""Quality benchmark: every recipe on several worlds and training seeds, paired,
scored against the true rates on a large held-out scoring set (docs/architecture.md §12).

  python -m bench.quality_bench [--quick] [--worlds 5] [--seeds 3] [--resume]

Per world seed:
1. Generates the world and runs the whole DAG once as a bootstrap (the same
   create_pipeline, BeamDagRunner): ExampleGen, Transform, the teacher, its gate
   and the BulkInferrer's examples with the teacher's columns.
2. Draws the scoring set: `--scoring-clicks` new clicks of the same world
   (generator.World.scoring_clicks: the world's tables, a separate click stream),
   never trained on.
3. Fits the peers on the train split (a Poisson GLM and LightGBM, both with the
   observability offset) and scores the teacher.
4. Trains every student recipe under each training seed with the pipeline's own
   student run_fn on the BulkInferrer's examples, quantizes it to INT8 with the
   Quantizer's own executor, and scores the float student and the INT8 model.
   The A/A row trains the default recipe under a disjoint set of seeds.

Predictions are kept under bench/results/quality/<size>/ (`--resume` reuses
finished models); bench/quality_report.py turns them into the committed JSON
(bench/reported/quality.json) with hierarchical CIs, and bench/readme.py writes
the docs/benchmarks.md table from that JSON.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
import types
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from bench import common
from bench import lgbm_peer
from bench import quality_report
from components.quantizer import convert
from components.quantizer import executor
import config as config_lib
from models import export
from models import glm as glm_lib
from models import student_trainer
from observation import labels
from pipeline import local
from schemas import codec
from schemas import columns
from schemas import records
from world import generator
from world import synthetic

RESULTS = 'bench/results/quality'
REPORTED = 'bench/reported/quality.json'
SECONDS_PER_DAY = generator.SECONDS_PER_DAY
# Each recipe: config overrides on top of the benchmark config.
KD_OFF = ['distill.aux_weight=0', 'distill.hint_weight=0', 'distill.tcpa_beta=0']
RECIPES = {
    'production': ['distill.recipe=production'],
    'offset': ['distill.recipe=offset'],
    # Teacher-free students that use the measurement panel (issue 14).
    'offset_panel': ['distill.recipe=offset_panel_calibrated'],
    'panel_only': ['distill.recipe=panel_only'],
    'offset_obs_head': ['distill.recipe=offset_observability_head'],
    'kd_output': ['distill.recipe=kd'] + KD_OFF,
    'kd_aux': ['distill.recipe=kd', 'distill.hint_weight=0', 'distill.tcpa_beta=0'],
    'kd_aux_hint': ['distill.recipe=kd', 'distill.tcpa_beta=0'],
    'kd_full': ['distill.recipe=kd'],
}
PANEL_RECIPES = ('offset_panel', 'panel_only', 'offset_obs_head')
# The recipe whose seeds are split in two for the A/A row.
AA_RECIPE = 'kd_full'
# Suffix of a model trained a second time with the same seed (reproducibility).
REPEAT = 'r'


@dataclasses.dataclass(frozen=True)
class Size:
  """How big a benchmark run is."""
  name: str  # its results go to bench/results/quality/<name>/
  worlds: int
  seeds: int
  clicks: int
  scoring_clicks: int
  teacher_steps: int
  student_steps: int


SIZES = {
    # Fits a working session on 2 cores (its JSON records its run time).
    # The default world and training steps, so the bench measures what `make run`
    # trains.
    'full': Size(name='full', worlds=5, seeds=3, clicks=100_000, scoring_clicks=200_000,
                 teacher_steps=2000, student_steps=2000),
    # For development: every code path, numbers too noisy to quote.
    'quick': Size(name='quick', worlds=2, seeds=2, clicks=30_000, scoring_clicks=100_000,
                  teacher_steps=400, student_steps=300),
}
FIRST_WORLD_SEED = 42


def training_overrides(size: Size) -> List[str]:
  """The training recipe, the same for every model and world."""
  return [f'model.teacher.train_steps={size.teacher_steps}',
          f'model.student.train_steps={size.student_steps}']


def bench_config(size: Size, world_seed: int, extra: Sequence[str] = ()):
  root = f'{RESULTS}/{size.name}/world-{world_seed}'
  return config_lib.load_config('pipeline/configs/default.yaml', [
      f'world.seed={world_seed}', f'world.num_clicks={size.clicks}',
      f'paths.data_root={root}/data', f'paths.output_root={root}/outputs',
      f'paths.serving_dir={root}/serving',
      # The bench measures the teacher's calibration per window (the report's
      # teacher_calibration) rather than stopping on it.
      'teacher_gate.calibration_band=0',
  ] + training_overrides(size) + list(extra))


def run_pipeline(cfg) -> Dict:
  """Generates the world and runs the DAG as a bootstrap unless a run of it
  already produced the BulkInferrer's examples; returns the artifacts the
  students and peers need."""
  paths = local.LocalPaths.from_config(cfg)
  if generator.read_manifest(cfg.paths.data_root) is None:
    generator.generate(cfg, cfg.paths.data_root)

  def outputs(node):
    if not os.path.exists(paths.metadata):
      return {}
    return local.node_outputs(paths.metadata, cfg.pipeline_name, node)
  if not outputs('BulkInferrer').get('output_examples'):
    local.run(cfg, bootstrap=True)  # cached nodes of an earlier attempt are reused

  def artifact(node, key):
    (a,) = outputs(node)[key]
    return a
  gate = artifact('TeacherGate', 'result')
  return {
      'inferred': artifact('BulkInferrer', 'output_examples').uri,
      'transform': artifact('Transform', 'transform_graph').uri,
      'schema': os.path.join(artifact('ImportSchemaGen', 'schema').uri, 'schema.pbtxt'),
      'teacher': artifact('teacher', 'model').uri,
      'gate': {k: local.custom_property(gate, k)
               for k in gate.mlmd_artifact.custom_properties},
      'executions': local.node_executions(paths.metadata, cfg.pipeline_name),
  }


def scoring_set(cfg, n: int) -> Dict[str, np.ndarray]:
  """n new clicks of the world on its last day (the eval day), with the slice
  columns the report needs."""
  world = generator.World(cfg)
  day_start = int(cfg.world.start().timestamp()) + (cfg.world.days - 1) * SECONDS_PER_DAY
  rows = world.scoring_clicks(n, day_start)
  spec = cfg.label_spec()
  rows[columns.OBSERVED_FRACTION] = labels.observed_fraction(
      rows[synthetic.BROWSER], spec).astype(np.float32)
  prefix = quality_report.SLICE_PREFIX
  rows[prefix + 'tcpa_gt_250'] = labels.tcpa_bucket(
      rows[synthetic.TARGET_CPA]) == columns.HIGH_TCPA_BUCKET
  rows[prefix + 'low_observability'] = labels.observability_bucket(
      rows[columns.OBSERVED_FRACTION], spec) == columns.LOW_OBSERVABILITY_BUCKET
  # E[rate | serving features]: the best any serving-only model can predict.
  rows['serving_rate'] = world.serving_rate(rows)
  # What the click's advertiser, region, browser and tagging imply for its
  # observability (the report's calibration by slice).
  rows[quality_report.EXPECTED_OBSERVABILITY] = world.expected_observability(rows)
  return rows


def serialized(rows: Dict[str, np.ndarray]) -> List[bytes]:
  """The scoring clicks as tf.Examples with every model feature."""
  return codec.encode({c: rows[c] for c in synthetic.SERVING_FEATURES +
                       synthetic.TEACHER_ONLY_FEATURES})


def predict_saved_model(model_dir: str, examples: List[bytes],
                        outputs: Sequence[str] = (export.PCONVS,)) -> np.ndarray:
  """[n, len(outputs)] from a SavedModel's serving signature."""
  serve = tf.saved_model.load(model_dir).signatures[export.SERVING_SIGNATURE]
  out = []
  for i in range(0, len(examples), 8192):
    got = serve(examples=tf.constant(examples[i:i + 8192]))
    out.append(np.stack([got[k].numpy() for k in outputs], 1))
  return np.concatenate(out).astype(np.float64)


def train_student(cfg, artifacts, out_dir: str) -> str:
  """The pipeline's student run_fn on the pipeline's artifacts."""
  fn_args = types.SimpleNamespace(
      train_files=[os.path.join(artifacts['inferred'], 'Split-train', '*')],
      eval_files=[os.path.join(artifacts['inferred'], 'Split-eval', '*')],
      train_steps=cfg.model.student.train_steps,
      eval_steps=max(1, cfg.model.student.train_steps // 20),
      transform_graph_path=artifacts['transform'], schema_path=artifacts['schema'],
      serving_model_dir=out_dir, base_model=None,
      custom_config=config_lib.trainer_custom_config(cfg))
  student_trainer.run_fn(fn_args)
  return out_dir


def quantize(artifacts, student_dir: str, mode: str, out_dir: str, cfg,
             latency_samples: int) -> dict:
  student = standard_artifacts.Model()
  # A Trainer's Model artifact holds the SavedModel at <uri>/Format-Serving; the
  # quality bench wrote it to student_dir, so link it into that layout.
  student.uri = os.path.join(out_dir, 'student')
  serving = path_utils.serving_model_dir(student.uri)
  if not os.path.exists(serving):
    os.makedirs(student.uri, exist_ok=True)
    os.symlink(os.path.abspath(student_dir), serving)
  examples = standard_artifacts.Examples()
  examples.uri = artifacts['inferred']
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  out, report = standard_artifacts.Model(), standard_artifacts.Model()
  out.uri, report.uri = os.path.join(out_dir, 'model'), os.path.join(out_dir, 'report')
  executor.Executor().Do(
      {executor.MODEL_KEY: [student], executor.EXAMPLES_KEY: [examples]},
      {executor.QUANTIZED_KEY: [out], executor.REPORT_KEY: [report]},
      {executor.MODE_KEY: mode,
       executor.CALIBRATION_EXAMPLES_KEY: cfg.quantizer.calibration_examples,
       executor.CALIBRATION_SAMPLING_KEY: cfg.quantizer.calibration_sampling,
       executor.MAX_NLL_INCREASE_KEY: 1.0,
       executor.LATENCY_SAMPLES_KEY: latency_samples,
       executor.EVAL_LABEL_KEY: cfg.eval_label_spec().to_json(),
       executor.SEED_KEY: cfg.model.seed})
  with open(os.path.join(report.uri, executor.REPORT_FILE)) as f:
    return json.load(f)


def glm_predictions(train: Dict[str, np.ndarray], rows) -> np.ndarray:
  """Per-window Poisson GLMs with the observability offset, L2 chosen per window
  by 3-fold cross-validation over the train split's rows with o_w > 0
  (glm_lib.cv_glm). A hold-out of the newest days cannot choose it: their
  7-90 d window has not started (o_w == 0), and the newest clicks for which it
  has hold almost no exposure and, on a 30k-click world, no conversion."""
  total = 0.0
  for label, exposure in zip(synthetic.LABELS, synthetic.OBSERVED_EXPOSURES):
    glm = glm_lib.cv_glm(train, train[label],
                         synthetic.features(synthetic.SERVING_FEATURES),
                         exposure=train[exposure])
    total = total + glm.predict(rows)
  return total


def first_world(quick: bool):
  """The first benchmark world at its size: (size, config, the artifacts of its
  pipeline run (whose own student the caller does not use), scoring clicks)."""
  size = SIZES['quick' if quick else 'full']
  cfg = bench_config(size, FIRST_WORLD_SEED)
  artifacts = run_pipeline(bench_config(size, FIRST_WORLD_SEED,
                                        ['model.student.train_steps=100']))
  return size, cfg, artifacts, scoring_set(cfg, size.scoring_clicks)


def teacher_fit(cfg, inferred: str) -> Dict:
  """Where the teacher's per-window calibration comes from, on the clicks it
  trained on (train split, click_ts <= T - lag), per window:

  conversions: the reported conversions its head was fit to (n_w);
  fit_to_labels: sum(o t) / sum(y), the teacher against its own labels;
  labels_vs_truth: sum(y) / sum(o l), those labels against their expectation
    (Poisson noise, about 1 / sqrt(n_w));
  calibration: sum(t) / sum(l) against the truth, the product of the two when
    the teacher's errors do not depend on the offset o.
  """
  rows = records.read_examples(os.path.join(inferred, 'Split-train'))
  keep = rows[columns.CLICK_TS] <= rows[columns.SNAPSHOT_TS] - (
      cfg.window.teacher_lag_seconds())
  out = {}
  for name, label, exposure, teacher, true in zip(
      synthetic.WINDOW_NAMES, synthetic.LABELS, synthetic.OBSERVED_EXPOSURES,
      synthetic.TEACHER_RATES, synthetic.TRUE_RATES):
    o = rows[exposure][keep].astype(np.float64)
    y = rows[label][keep].astype(np.float64)
    t = rows[teacher][keep].astype(np.float64)
    lam = rows[true][keep].astype(np.float64)
    out[name] = {'conversions': int(y.sum()),
                 'fit_to_labels': float((o * t).sum() / y.sum()),
                 'labels_vs_truth': float(y.sum() / (o * lam).sum()),
                 'calibration': float(t.sum() / lam.sum())}
  return out


def teacher_observability(cfg, inferred: str) -> Dict:
  """The teacher's per-click observability against the world's truth, beside
  the prior's, by slice (quality_report.observability_errors), on every click
  the BulkInferrer scored (both splits)."""
  rows = records.read_examples(inferred)
  # The prior's mature observed share per click, as the ExampleGen wrote it.
  prior = np.stack([rows[c].astype(np.float64)
                    for c in synthetic.PRIOR_OBSERVABILITY], 1)
  teacher = np.stack([rows[c].astype(np.float64)
                      for c in synthetic.TEACHER_OBSERVABILITY], 1)
  keys = {c: np.asarray(rows[c]).reshape(-1).astype(np.int64) for c in (
      synthetic.BROWSER, synthetic.ADVERTISER_FIRST_PARTY, 'advertiser_id', 'country')}
  expected = generator.World(cfg).expected_observability_by_window(keys)
  # The click-level expectation (windows weighted by the true rates), for the
  # expected-observability quintiles and advertiser deciles.
  rate = np.stack([rows[c].astype(np.float64) for c in synthetic.TRUE_RATES], 1)
  rows[quality_report.EXPECTED_OBSERVABILITY] = (rate * expected).sum(1) / np.maximum(
      rate.sum(1), 1e-300)
  return quality_report.observability_errors(rows, teacher, prior, expected)


class WorldRun:
  """One world's models and their predictions on its scoring set, on disk."""

  def __init__(self, size: Size, world_seed: int, overrides: Sequence[str]):
    self.size = size
    self.seed = world_seed
    self.overrides = list(overrides)
    self.cfg = bench_config(size, world_seed, overrides)
    self.dir = os.path.join(RESULTS, size.name, f'world-{world_seed}')
    self.pred_dir = os.path.join(self.dir, 'predictions')
    os.makedirs(self.pred_dir, exist_ok=True)

  def path(self, name: str) -> str:
    return os.path.join(self.pred_dir, name + '.npy')

  def have(self, name: str) -> bool:
    return os.path.exists(self.path(name))

  def save(self, name: str, pred: np.ndarray) -> None:
    np.save(self.path(name) + '.tmp.npy', np.asarray(pred, np.float32))
    os.replace(self.path(name) + '.tmp.npy', self.path(name))

  def run(self, recipes: Sequence[str], seeds: Sequence[int],
          aa_seeds: Sequence[int], repeat: bool = False, log=print) -> Dict:
    """Trains and scores whatever is not on disk yet; returns the world's record."""
    t0 = time.time()
    # The pipeline's own student is not scored (every recipe is trained below),
    # so it trains briefly.
    artifacts = run_pipeline(bench_config(self.size, self.seed, self.overrides + [
        'model.student.train_steps=100']))
    rows = scoring_set(self.cfg, self.size.scoring_clicks)
    np.savez(os.path.join(self.dir, 'scoring.npz'), **rows)
    examples = None
    if not self.have('teacher'):
      examples = serialized(rows)
      teacher = predict_saved_model(
          path_utils.serving_model_path(artifacts['teacher']), examples,
          export.rate_outputs(synthetic.WINDOW_NAMES))
      self.save('teacher', teacher.sum(1))
      self.save('teacher_windows', teacher)
    if not (self.have('glm') and self.have('lgbm')):
      train = records.read_examples(os.path.join(artifacts['inferred'], 'Split-train'))
      if not self.have('glm'):
        self.save('glm', glm_predictions(train, rows))
      if not self.have('lgbm'):
        pred, info = lgbm_peer.fit_predict(train, rows, seed=self.seed)
        with open(os.path.join(self.dir, 'lgbm.json'), 'w') as f:
          json.dump(info, f, indent=1, sort_keys=True, default=str)
        self.save('lgbm', pred)
    quant = {}
    jobs = [(r, s, '') for s in seeds for r in recipes] + [
        (AA_RECIPE, s, '') for s in aa_seeds]
    if repeat:  # the same command again: does training reproduce?
      jobs.append((AA_RECIPE, seeds[0], REPEAT))
    for recipe, seed, suffix in jobs:
      name = f'{recipe}-s{seed}{suffix}'
      if self.have(name + '-int8'):
        continue
      cfg = bench_config(self.size, self.seed, self.overrides + RECIPES[recipe] +
                         [f'model.seed={seed}'])
      model_dir = os.path.join(self.dir, 'students', name)
      t = time.time()
      train_student(cfg, artifacts, model_dir)
      seconds = time.time() - t
      if examples is None:
        examples = serialized(rows)
      self.save(name + '-float', predict_saved_model(model_dir, examples)[:, 0])
      report = quantize(artifacts, model_dir, 'int8',
                                    os.path.join(self.dir, 'int8', name), cfg,
                                    latency_samples=100)
      tflite = os.path.join(path_utils.serving_model_path(
          os.path.join(self.dir, 'int8', name, 'model')), 'tflite')
      with open(tflite, 'rb') as f:
        self.save(name + '-int8', convert.predict(f.read(), rows))
      quant[name] = {'train_seconds': seconds,
                     'summary': export.read_summary(model_dir),
                     'int8_bytes': report['quantized_bytes'],
                     'size_ratio': report['size_ratio']}
      log(f'world {self.seed} {name}: trained in {seconds:.0f}s')
    record = {
        'world_seed': self.seed,
        'teacher_fit': teacher_fit(self.cfg, artifacts['inferred']),
        'teacher_observability': teacher_observability(self.cfg,
                                                       artifacts['inferred']),
        'world_spec_sha256': generator.spec_hash(self.cfg),
        'gate': artifacts['gate'],
        'pipeline_seconds': {e['node']: e['seconds'] for e in artifacts['executions']},
        'seconds': time.time() - t0,
    }
    meta = os.path.join(self.dir, 'record.json')
    if os.path.exists(meta):  # a resumed world: keep what earlier runs did
      with open(meta) as f:
        old = json.load(f)
      quant = {**old.get('students', {}), **quant}
      record['seconds'] += old.get('seconds', 0.0)
    record['students'] = quant
    with open(meta, 'w') as f:
      json.dump(record, f, indent=1, sort_keys=True, default=str)
    return record


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.quality_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='the development size (2 worlds x 2 seeds, small)')
  parser.add_argument('--worlds', type=int, help='number of world seeds')
  parser.add_argument('--seeds', type=int, help='training seeds per recipe')
  parser.add_argument('--recipes', nargs='+', choices=list(RECIPES),
                      help='default: all, those that need a measurement panel only '
                      'when the world has one')
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='KEY=VALUE', help='extra config overrides (all runs)')
  parser.add_argument('--resume', action='store_true',
                      help='keep finished models under bench/results/quality/<size> '
                      '(default: start from scratch)')
  parser.add_argument('--world-index', type=int, nargs='+', metavar='I',
                      help='train and score only these worlds (0-based), with no '
                      'report: to split one run across processes or machines')
  parser.add_argument('--report-only', action='store_true',
                      help='write the report from the predictions on disk')
  parser.add_argument('--name', help='results folder under bench/results/quality '
                      '(default: the size\'s name), so runs on different worlds keep '
                      'their models side by side')
  parser.add_argument('--out', help=f'result JSON (default {REPORTED}; --quick: '
                      f'{RESULTS}/quick/quality.json)')
  args = parser.parse_args(argv)
  if not args.recipes:
    panel = bench_config(SIZES['quick'], FIRST_WORLD_SEED,
                         args.overrides).world.panel_share > 0
    args.recipes = [r for r in RECIPES if panel or r not in PANEL_RECIPES]
  size = SIZES['quick' if args.quick else 'full']
  size = dataclasses.replace(size, worlds=args.worlds or size.worlds,
                             seeds=args.seeds or size.seeds,
                             name=args.name or size.name)
  results = os.path.join(RESULTS, size.name)
  if not (args.resume or args.report_only or args.world_index) and os.path.exists(
      results):
    shutil.rmtree(results)
  seeds = list(range(size.seeds))
  aa_seeds = list(range(size.seeds, 2 * size.seeds))
  t0 = time.time()
  worlds = []
  for i in args.world_index or range(size.worlds):
    run = WorldRun(size, FIRST_WORLD_SEED + i, args.overrides)
    if args.report_only:
      with open(os.path.join(run.dir, 'record.json')) as f:
        worlds.append(json.load(f))
      inferred = run_pipeline(run.cfg)['inferred']
      worlds[-1]['teacher_fit'] = teacher_fit(run.cfg, inferred)
      worlds[-1]['teacher_observability'] = teacher_observability(run.cfg, inferred)
    else:
      worlds.append(run.run(args.recipes, seeds, aa_seeds, repeat=i == 0))
  if args.world_index:
    return 0
  cfg = bench_config(size, FIRST_WORLD_SEED, args.overrides)
  result = quality_report.build(
      [os.path.join(results, f'world-{w["world_seed"]}') for w in worlds],
      recipes=args.recipes, seeds=seeds, aa_seeds=aa_seeds, aa_recipe=AA_RECIPE,
      repeat=f'{AA_RECIPE}-s{seeds[0]}{REPEAT}')
  result.update(common.provenance(cfg))
  result.update({
      'size': dataclasses.asdict(size), 'quick': args.quick,
      'world_seeds': [w['world_seed'] for w in worlds],
      'training_seeds': seeds, 'aa_seeds': aa_seeds,
      'recipes': {k: RECIPES[k] for k in args.recipes},
      'overrides': training_overrides(size) + args.overrides,
      'worlds': worlds,
      'seconds': sum(w['seconds'] for w in worlds) if args.report_only else
                 time.time() - t0,
  })
  out = args.out or (f'{results}/quality.json' if args.quick else REPORTED)
  common.write_json(out, result)
  print(quality_report.markdown(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
