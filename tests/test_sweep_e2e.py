"""A sweep on the shared end-to-end run's artifacts (issue 15), executor by
executor: TFX's Tuner executor with StudentTuner (3 trials), the student
Trainer with the Tuner's best, SweepRecord, and SweepLookup for the next night,
with and without a config change to the fingerprint. The fixture's nights run
SweepLookup in the DAG (nothing recorded: the config's values)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.components.trainer import executor as trainer_executor
from tfx.components.tuner import executor as tuner_executor
from tfx.dsl.components.base import base_executor
from tfx.proto import trainer_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import path_utils
from tfx.utils import proto_utils

from components.example_gen import executor as example_gen_executor
from components.example_gen import window
from components.sweep import executor as sweep
import config as config_lib
from models import export
from models import hparams
from models import student_trainer
from pipeline import local
from schemas import columns
from schemas import records
from tests.helpers import E2E_OVERRIDES

pytestmark = pytest.mark.e2e

TUNE_FRACTION = 0.2
# The planted value: every trial and so the best trains 37 steps, not the
# TrainArgs' 300 the student Trainer is given.
PLANTED_STEPS = 37
SWEEP = [f'sweep.tune_fraction={TUNE_FRACTION}', 'sweep.algorithm=grid',
         'sweep.trials=3', 'sweep.alpha=[0.3,0.6,0.9]',
         f'sweep.train_steps=[{PLANTED_STEPS}]', 'sweep.temperature=[]',
         'sweep.aux_weight=[]', 'sweep.hint_weight=[]', 'sweep.tcpa_beta=[]',
         'sweep.learning_rate=[]', 'sweep.min_panel_examples=20',
         # 37-step runs: XLA's compile would cost more than the steps.
         'training.jit_compile=false']


def _config(e2e, extra=()):
  return config_lib.load_config(None, E2E_OVERRIDES + [
      f'paths.data_root={e2e.cfg.paths.data_root}'] + SWEEP + list(extra))


def _with_tune_split(src, out):
  """The BulkInferrer's examples re-split as a tune_fraction ExampleGen would
  (the same hash of click_id over the train split; eval untouched)."""
  examples = standard_artifacts.Examples()
  examples.uri = str(out)
  examples.split_names = artifact_utils.encode_split_names(
      list(example_gen_executor.split_names(TUNE_FRACTION)))
  train = records.read_records(os.path.join(src.uri, 'Split-train', '*'))
  ids = tf.io.parse_example(tf.constant(train), {
      columns.CLICK_ID: tf.io.FixedLenFeature([1], tf.int64)})[columns.CLICK_ID]
  tune = window.tune_mask(ids.numpy().reshape(-1), TUNE_FRACTION)
  eval_ = records.read_records(os.path.join(src.uri, 'Split-eval', '*'))
  options = tf.io.TFRecordOptions(compression_type='GZIP')
  for split, rows in (('train', [r for r, t in zip(train, tune) if not t]),
                      ('tune', [r for r, t in zip(train, tune) if t]),
                      ('eval', eval_)):
    os.makedirs(os.path.join(out, f'Split-{split}'))
    with tf.io.TFRecordWriter(os.path.join(out, f'Split-{split}', 'data.gz'),
                              options) as w:
      for r in rows:
        w.write(r)
  return examples, int(tune.sum())


def _student(e2e, cfg, inputs, out, hyperparameters):
  model, run = standard_artifacts.Model(), standard_artifacts.ModelRun()
  model.uri, run.uri = str(out / 'model'), str(out / 'run')
  trainer_executor.GenericExecutor().Do(
      {**inputs, specs.HYPERPARAMETERS_KEY: [hyperparameters]},
      {specs.MODEL_KEY: [model], specs.MODEL_RUN_KEY: [run]},
      {'run_fn': 'models.student_trainer.run_fn',
       specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs(
           num_steps=cfg.model.student.train_steps)),
       specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(num_steps=1)),
       specs.CUSTOM_CONFIG_KEY: json.dumps(config_lib.trainer_custom_config(cfg))})
  summary = export.read_summary(path_utils.serving_model_path(model.uri))
  with open(os.path.join(run.uri, student_trainer.HYPERPARAMETERS_FILE)) as f:
    assert json.load(f) == summary['hyperparameters']
  return summary


@pytest.fixture(scope='module')
def swept(e2e, tmp_path_factory):
  """The Tuner executor on the kd night's artifacts, then the student with its best."""
  tmp = tmp_path_factory.mktemp('sweep')
  cfg = _config(e2e)
  examples, tuned = _with_tune_split(e2e.artifact('BulkInferrer', 'output_examples'),
                                     tmp / 'examples')
  inputs = {specs.EXAMPLES_KEY: [examples],
            specs.TRANSFORM_GRAPH_KEY: [e2e.outputs('Transform')['transform_graph'][0]],
            specs.SCHEMA_KEY: [e2e.outputs('ImportSchemaGen')['schema'][0]]}
  for key in (specs.TRANSFORM_GRAPH_KEY, specs.SCHEMA_KEY):
    proto = inputs[key][0]
    artifact = (standard_artifacts.TransformGraph() if key == specs.TRANSFORM_GRAPH_KEY
                else standard_artifacts.Schema())
    artifact.uri = proto.uri
    inputs[key] = [artifact]
  best, results = standard_artifacts.HyperParameters(), standard_artifacts.TunerResults()
  best.uri, results.uri = str(tmp / 'best'), str(tmp / 'results')
  os.makedirs(best.uri)
  os.makedirs(results.uri)
  tuner_executor.Executor(base_executor.BaseExecutor.Context(
      tmp_dir=str(tmp / 'tuner_tmp'), unique_id='tuner')).Do(
          inputs, {specs.BEST_HYPERPARAMETERS_KEY: [best],
                   specs.TUNER_RESULTS_KEY: [results]},
          {'tuner_fn': 'models.student_tuner.tuner_fn',
           specs.TRAIN_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.TrainArgs(
               num_steps=cfg.model.student.train_steps)),
           specs.EVAL_ARGS_KEY: proto_utils.proto_to_json(trainer_pb2.EvalArgs(
               splits=[example_gen_executor.TUNE], num_steps=1)),
           specs.CUSTOM_CONFIG_KEY: json.dumps(config_lib.trainer_custom_config(cfg))})
  student = _student(e2e, cfg, inputs, tmp / 'student', best)
  return {'cfg': cfg, 'tmp': tmp, 'inputs': inputs, 'best': best,
          'results': results, 'student': student, 'tuned': tuned}


def test_the_student_trains_with_the_tuners_best_and_records_it(swept):
  with open(os.path.join(swept['results'].uri, 'tuner_results.json')) as f:
    trials = json.load(f)
  assert len(trials) == 3 and swept['tuned'] > 0
  assert sorted(t['alpha'] for t in trials) == [0.3, 0.6, 0.9]
  assert all(np.isfinite(t['score']) for t in trials)
  best = hparams.values_of(sweep.read_hp_file(swept['best']))
  # The best is the trial with the lowest tune-split score.
  assert best['alpha'] == min(trials, key=lambda t: t['score'])['alpha']
  used = swept['student']['hyperparameters']
  assert used['source'] == hparams.SOURCE_TUNER
  assert {k: used['values'][k] for k in best} == best
  assert used['fingerprint'] == hparams.fingerprint(swept['cfg'])
  # The planted step count took effect: Keras ran 37 steps, not TrainArgs' 300.
  assert swept['student']['steps_trained'] == PLANTED_STEPS
  assert swept['student']['loss_weights']['alpha'] == best['alpha']


def test_next_night_reuses_the_sweep_and_a_fingerprint_change_falls_back(
    swept, e2e):
  cfg, tmp = swept['cfg'], swept['tmp']
  sweeps = str(tmp / 'sweeps')
  sweep.RecordExecutor().Do(
      {sweep.BEST_HYPERPARAMETERS_KEY: [swept['best']]},
      {sweep.RECORD_KEY: [standard_artifacts.HyperParameters()]},
      {sweep.SWEEPS_DIR_KEY: sweeps, sweep.FINGERPRINT_KEY: hparams.fingerprint(cfg)})

  def lookup(night_cfg, name):
    out = standard_artifacts.HyperParameters()
    out.uri = str(tmp / name)
    sweep.LookupExecutor().Do({}, {sweep.HYPERPARAMETERS_KEY: [out]}, {
        sweep.SWEEPS_DIR_KEY: sweeps,
        sweep.FINGERPRINT_KEY: hparams.fingerprint(night_cfg)})
    return out

  # Tonight's config differs from the sweep's only in values a sweep tunes.
  tonight = _config(e2e, ['distill.alpha=0.5', 'model.student.train_steps=300'])
  summary = _student(e2e, tonight, swept['inputs'], tmp / 'nightly',
                     lookup(tonight, 'night'))
  used = summary['hyperparameters']
  assert used['source'] == hparams.SOURCE_SWEEP
  assert used['values'] == swept['student']['hyperparameters']['values']
  assert summary['steps_trained'] == PLANTED_STEPS
  # A different student architecture: that sweep says nothing about it.
  changed = _config(e2e, ['model.student.hidden_units=[32,16]'])
  body = sweep.read_hp_file(lookup(changed, 'changed'))
  assert hparams.values_of(body) == {}
  assert hparams.provenance_of(body)['source'] == hparams.SOURCE_CONFIG


def test_the_nights_looked_up_no_sweep_and_trained_with_the_config(e2e):
  # In the DAG, from ML Metadata: nothing recorded for the fixture's fingerprint.
  (looked_up,) = e2e.outputs('SweepLookup')['hyperparameters']
  assert local.custom_property(looked_up, sweep.SOURCE) == hparams.SOURCE_CONFIG
  assert local.custom_property(looked_up, sweep.FINGERPRINT_KEY) == \
      hparams.fingerprint(e2e.cfg)
  (model,) = e2e.outputs('student')['model']
  used = export.read_summary(path_utils.serving_model_path(model.uri))[
      'hyperparameters']
  assert used['source'] == hparams.SOURCE_CONFIG
  assert used['values'] == {**hparams.effective(e2e.cfg),
                            'train_steps': e2e.cfg.model.student.train_steps}
  # The run summary (printed after the night) shows them.
  assert 'hyperparameters (config): alpha=0.5' in e2e.summaries['kd']
