"""The student's run_fn (Trainer id `student`): a thin adapter over model code.

Reads the BulkInferrer's examples (the joined examples plus teacher columns); the
network sees serving features only. The loss (models/distill.py) follows the
recipe in config; the teacher's columns count only for clicks at or before
T - teacher_lag_hours (masked otherwise). Distribution, XLA and precision come
from the `training` config section; optional magnitude pruning from `pruning`
(models/pruning.py).
"""

import functools
import json
import os
from typing import Dict, List, NamedTuple, Sequence

import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

import numpy as np

import config as config_lib
from config.dataset import DatasetSpec
from models import data
from models import distill
from models import distribution
from models import export
from models import losses
from models import hparams
from models import panel_calibration
from models import pruning
from models import towers
from models import training
import schemas
from schemas import columns

# In the model run artifact: the hyperparameters the student trained with.
HYPERPARAMETERS_FILE = 'hyperparameters.json'


def target_columns(weights: distill.DistillWeights,
                   dataset_spec: DatasetSpec) -> List[str]:
  """Raw columns the loss needs besides counts, exposures and times."""
  d = dataset_spec
  w = d.window_names()
  cols = [d.tcpa] if d.tcpa else []
  if weights.uses_panel:
    cols.append(d.panel)
  if weights.panel_calibrated:
    # The calibration's lookup keys (read raw here, beside the features).
    cols += [c for c in panel_calibration.PanelKeys.of(d).key_columns()
             if c not in cols]
  if weights.uses_teacher:
    cols += list(columns.teacher_rates(w)) + [columns.TEACHER_HINT]
  if weights.aux_weight > 0:
    cols += list(columns.teacher_observed_exposures(w))
  return cols


def with_distill_targets(features, targets, *, weights: distill.DistillWeights,
                         lag_seconds: int, dataset_spec: DatasetSpec,
                         tcpa_reference: float, panel_tables=None):
  """Adds the distillation targets: teacher rates, hint and observed exposures,
  mask, tCPA, the panel flag."""
  d = dataset_spec
  w = d.window_names()
  targets = dict(targets)
  if d.tcpa:
    targets[distill.TCPA] = targets.pop(d.tcpa)
  else:  # no tCPA: every click weighs (reference / reference)^beta = 1
    targets[distill.TCPA] = tf.fill(tf.shape(targets[columns.CLICK_TS]),
                                    tf.constant(tcpa_reference, tf.float32))
  if weights.uses_panel:
    targets[losses.IN_PANEL] = targets.pop(d.panel)
  if weights.panel_calibrated:
    targets = panel_calibration.calibrate_targets(
        targets, panel_tables, panel_calibration.PanelKeys.of(d))
  available = targets[columns.CLICK_TS] <= targets[columns.SNAPSHOT_TS] - lag_seconds
  targets[distill.TEACHER_MASK] = tf.cast(available, tf.float32)
  if weights.uses_teacher:
    targets[distill.TEACHER_RATES] = tf.concat(
        [targets.pop(c) for c in columns.teacher_rates(w)], axis=1)
    targets[distill.TEACHER_HINT] = targets.pop(columns.TEACHER_HINT)
  if weights.aux_weight > 0:
    targets[distill.TEACHER_OBSERVED] = tf.concat(
        [targets.pop(c) for c in columns.teacher_observed_exposures(w)], axis=1)
  return features, targets


def dataset(patterns: Sequence[str], tft_layer, cfg: config_lib.Config,
            weights: distill.DistillWeights, panel_tables=None,
            **kwargs) -> tf.data.Dataset:
  """(serving features, targets) batches of the global batch size."""
  d = cfg.dataset
  if weights.panel_only:
    kwargs['keep'] = lambda e: tf.equal(e[d.panel][0], 1)
  ds = data.model_dataset(patterns, tft_layer, d.serving_features(),
                          cfg.model.student.batch_size, d,
                          extra_targets=target_columns(weights, d),
                          shuffle_buffer=cfg.model.shuffle_buffer,
                          read_parallelism=cfg.model.read_parallelism, **kwargs)
  return ds.map(functools.partial(
      with_distill_targets, weights=weights,
      lag_seconds=cfg.window.teacher_lag_seconds(), dataset_spec=d,
      tcpa_reference=cfg.distill.tcpa_reference, panel_tables=panel_tables))


def build_network(cfg: config_lib.Config, weights: distill.DistillWeights,
                  hint_width: int = 0) -> tf.keras.Model:
  """The student; `hint_width` (default: the schema's) sizes the hint projection."""
  return towers.build_student_tower(
      cfg, aux_heads=weights.aux_weight > 0,
      hint_projection=(hint_width or schemas.hint_width())
      if weights.hint_weight > 0 else 0,
      observability_head=weights.observability_head)


def compile_model(cfg: config_lib.Config, weights: distill.DistillWeights,
                  network: tf.keras.Model, train_steps: int = 0) -> training.LossModel:
  """The trainable model (call inside the strategy's scope)."""
  model = training.LossModel(
      network, functools.partial(distill.student_loss, w=weights), distill.TERMS)
  # No length given (tests): the config's train_steps, else its budget.
  model.compile(optimizer=training.optimizer(
      cfg.model.student, train_steps or cfg.model.student.train_steps
      or cfg.model.student.max_steps),
                jit_compile=cfg.training.jit_compile,
                steps_per_execution=cfg.training.steps_per_execution)
  return model


def float32_copy(cfg, weights, network, hint_width: int) -> tf.keras.Model:
  """The same weights in a float32 network (for export after bfloat16 training)."""
  tf.keras.mixed_precision.set_global_policy('float32')
  copy = build_network(cfg, weights, hint_width)
  copy.set_weights(network.get_weights())
  return copy


class WarmStartError(RuntimeError):
  """A warm start was asked for, its weights exist, and no layer matched."""


def warm_start_from(network: tf.keras.Model, base_model) -> Dict:
  """Loads the blessed baseline's float student into `network` if the Trainer
  was given one (model.student_warm_start); returns what was loaded for the
  training summary ({} when nothing was asked for).

  Raises:
    WarmStartError: the weights exist but no layer of `network` matched them by
      name and shape: it would train from scratch while the run says it warm
      started (the network changed; turn model.student_warm_start off for a
      night to start over).
  """
  if not base_model:
    return {}
  path = export.warm_start_weights(base_model)
  loaded = export.load_warm_start(network, path)
  if loaded is None:
    # A baseline from before warm starts existed: train from scratch, say so.
    logging.warning('student: no warm-start weights at %s; training from scratch',
                    path)
    return {'path': '', 'layers_matched': 0, 'layers_with_weights': 0,
            'skipped': [], 'reason': f'no weights at {path}'}
  total = len(loaded.matched) + len(loaded.skipped)
  if not loaded.matched:
    raise WarmStartError(
        f'student: warm start from {path} matched none of the {total} layers with '
        'weights (by name and shape); it would train from scratch. Set '
        'model.student_warm_start=false for a night to start over.')
  logging.info('student: warm-started from %s: %d of %d layers with weights matched%s',
               path, len(loaded.matched), total,
               f'; kept their initialisation: {", ".join(loaded.skipped)}'
               if loaded.skipped else '')
  return loaded.to_json()


def train_network(cfg: config_lib.Config, weights: distill.DistillWeights,
                  hint_width: int, strategy, train: tf.data.Dataset,
                  evaluation: tf.data.Dataset, fn_args):
  """Builds, warm-starts and trains the student (pruned if cfg.pruning says so).

  Returns:
    (the float32 network to export, the Keras History, the warm start's record).
    A pruned network comes back stripped: plain Dense layers with their own
    names and masked kernels, for the export, the lean serving graph and the
    next night's warm start.
  """
  prune = cfg.pruning.enabled
  with strategy.scope():
    network = build_network(cfg, weights, hint_width)
    # Before wrapping for pruning: the wrappers train the warm-started weights.
    warm_start = warm_start_from(network, getattr(fn_args, 'base_model', None))
    trained = (pruning.wrap(network, cfg.pruning, fn_args.train_steps,
                            cfg.training.steps_per_execution) if prune else network)
    model = compile_model(cfg, weights, trained, fn_args.train_steps)
  history = training.fit(model, train, evaluation, fn_args,
                         callbacks=pruning.callbacks() if prune else (),
                         batch_size=cfg.model.student.batch_size)
  network = pruning.strip(trained) if prune else network
  if cfg.training.precision != 'float32':
    network = float32_copy(cfg, weights, network, hint_width)
  return network, history, warm_start


def resolve_hyperparameters(cfg: config_lib.Config, fn_args):
  """The config with the Trainer's hyperparameters applied, and the record of
  what the student trains with (values, where they came from).

  The Trainer's `hyperparameters` input is the Tuner's best (a sweep run) or the
  SweepLookup's (a nightly run: a recorded sweep with this fingerprint, or none:
  the config's). `train_steps` overrides the TrainArgs' num_steps.
  """
  hp_config = getattr(fn_args, 'hyperparameters', None)
  values = hparams.values_of(hp_config)
  if values:
    cfg = hparams.apply(cfg, values)
  if 'train_steps' in values:
    fn_args.train_steps = int(values['train_steps'])
  record = {**hparams.provenance_of(hp_config),
            'values': {**hparams.effective(cfg), 'train_steps': fn_args.train_steps},
            'from_hyperparameters': sorted(values),
            'fingerprint': hparams.fingerprint(cfg)}
  return cfg, record


def prepare(cfg: config_lib.Config, fn_args):
  """What training needs besides the datasets: loss weights, the Transform
  layer, the schema path and the panel calibration tables (or None)."""
  weights = distill.DistillWeights.from_config(cfg.distill)
  tft_layer = tft.TFTransformOutput(
      fn_args.transform_graph_path).transform_features_layer()
  # The teacher columns' widths come from the schema artifact (DISTILL environment).
  schema_path = fn_args.schema_path or ''
  tables = (panel_calibration.fit_from_files(
      fn_args.train_files, 'distill.recipe offset_panel_calibrated', cfg.dataset)
            if weights.panel_calibrated else None)
  return weights, tft_layer, schema_path, tables


class Trained(NamedTuple):
  """A trained student and what it was trained with."""
  network: tf.keras.Model  # float32, stripped if pruned
  history: tf.keras.callbacks.History
  warm_start: Dict  # warm_start_from's record
  weights: distill.DistillWeights
  tft_layer: tf.keras.layers.Layer
  schema_path: str
  tables: object  # panel calibration tables, or None
  strategy: tf.distribute.Strategy
  length: Dict  # training.resolve_steps' record: steps, examples seen


def train(cfg: config_lib.Config, fn_args) -> Trained:
  """Trains the student as run_fn does (seeded); a sweep's trials call it too."""
  # Before any dataset exists (see training.set_seed).
  training.set_seed(cfg.model.seed)
  weights, tft_layer, schema_path, tables = prepare(cfg, fn_args)
  logging.info('student: recipe %s, loss weights %s', cfg.distill.recipe, weights)
  train_ds = dataset(fn_args.train_files, tft_layer, cfg, weights, tables,
                     seed=cfg.model.seed, schema_path=schema_path)
  evaluation = dataset(fn_args.eval_files, tft_layer, cfg, weights, tables,
                       shuffle=False, schema_path=schema_path)
  length = training.resolve_steps(
      fn_args, cfg.model.student,
      lambda: training_examples(fn_args.train_files, cfg, weights))
  logging.info('student: training length %s', length)
  strategy = distribution.get_strategy(cfg.training.strategy, cfg.training.tpu)
  tf.keras.mixed_precision.set_global_policy(cfg.training.precision)
  hint_width = schemas.hint_width(schema_path)
  network, history, warm_start = train_network(
      cfg, weights, hint_width, strategy, train_ds, evaluation, fn_args)
  return Trained(network, history, warm_start, weights, tft_layer, schema_path,
                 tables, strategy, length)


def training_examples(patterns: Sequence[str], cfg: config_lib.Config,
                      weights: distill.DistillWeights) -> int:
  """How many examples the student trains on: the train split's records (a
  pass that does not parse), or its panel clicks for `panel_only`."""
  if not weights.panel_only:
    return data.count_records(patterns, cfg.model.read_parallelism)
  panel = cfg.dataset.panel
  ds = data.raw_dataset(patterns, [panel], 65536, cfg.dataset, shuffle=False,
                        repeat=False, drop_remainder=False,
                        keep=lambda e: tf.equal(e[panel][0], 1))
  return int(sum(int(tf.shape(b[panel])[0]) for b in ds))


def predicted_rates(network: tf.keras.Model, tft_layer, patterns: Sequence[str],
                    schema_path: str, dataset_spec: DatasetSpec,
                    extra: Sequence[str] = ()):
  """([N, W] predicted rates per window, {column: [N]} of `extra` raw columns)
  over every example of `patterns`, in file order."""
  serving = list(dataset_spec.serving_names())
  names = list(dict.fromkeys(serving + list(extra)))
  ds = data.raw_dataset(patterns, names, 4096, dataset_spec, shuffle=False,
                        repeat=False, drop_remainder=False, schema_path=schema_path)
  rates, rows = [], {c: [] for c in extra}
  for batch in ds:
    transformed = tft_layer({n: batch[n] for n in serving})
    out = network({n: transformed[n] for n in serving}, training=False)
    rates.append(np.exp(np.asarray(out[towers.LOG_RATES], np.float64)))
    for c in extra:
      rows[c].append(np.asarray(batch[c]).reshape(-1))
  return np.concatenate(rates), {c: np.concatenate(v) for c, v in rows.items()}


def tune_score(cfg: config_lib.Config, network: tf.keras.Model, tft_layer,
               patterns: Sequence[str], schema_path: str) -> dict:
  """The tune split's score (hparams.tune_nll) in the configured mode."""
  d = cfg.dataset
  w = d.window_names()
  extra = hparams.score_columns(w) + ((d.panel,) if d.panel else ())
  rates, rows = predicted_rates(network, tft_layer, patterns, schema_path, d, extra)
  if d.panel:
    rows[hparams.PANEL] = rows.pop(d.panel)
  mode = hparams.score_mode(cfg.sweep.score, rows.get(hparams.PANEL),
                            cfg.sweep.min_panel_examples)
  return hparams.tune_nll(rates, rows, mode, w)


def run_fn(fn_args) -> None:
  """TFX Trainer entry point for the student."""
  cfg = config_lib.from_trainer_custom_config(fn_args.custom_config)
  cfg, used = resolve_hyperparameters(cfg, fn_args)
  logging.info('student: hyperparameters %s', used)
  trained = train(cfg, fn_args)
  # Derived from the data when neither the config nor a sweep set it.
  used['values']['train_steps'] = fn_args.train_steps
  network, history, warm_start = trained.network, trained.history, trained.warm_start
  weights, tables, strategy = trained.weights, trained.tables, trained.strategy
  summary: Dict = {
      'recipe': cfg.distill.recipe,
      'loss_weights': weights.__dict__,
      'hyperparameters': used,
      'strategy': type(strategy).__name__,
      'replicas': strategy.num_replicas_in_sync,
      'train_steps': fn_args.train_steps,
      # What Keras ran (train_steps as the Trainer passed it, a sweep's, or
      # derived from the data: `training_length`).
      'steps_trained': int(history.params.get('steps') or 0),
      'examples_seen': int(history.params.get('steps') or 0) * cfg.model.student.batch_size,
      'training_length': trained.length,
      'warm_start': warm_start.get('path', ''),
      'warm_start_layers': warm_start,
      'batch_size': cfg.model.student.batch_size,
      'parameters': towers.parameter_counts(network),
      'final': {k: float(v[-1]) for k, v in history.history.items()},
  }
  if cfg.pruning.enabled:
    summary['pruning'] = {'layers': pruning.pruned_layers(network, cfg.pruning),
                          'target_sparsity': cfg.pruning.target_sparsity,
                          'sparsity': pruning.sparsity(network)}
  if tables is not None:
    summary['panel_calibration'] = panel_calibration.summary(tables)
  export.save_student(network, trained.tft_layer, fn_args.serving_model_dir, summary,
                      cfg.dataset)
  # The model run artifact records what the student trained with too.
  run_dir = getattr(fn_args, 'model_run_dir', None)
  if run_dir:
    tf.io.gfile.makedirs(run_dir)
    with tf.io.gfile.GFile(os.path.join(run_dir, HYPERPARAMETERS_FILE), 'w') as f:
      f.write(json.dumps(used, sort_keys=True))
  logging.info('student: summary %s', summary)
