"""The teacher's run_fn (Trainer id `teacher`): a thin adapter over model code.

The teacher trains on the train split restricted to clicks at least
`teacher_lag_hours` older than T (its training and inference run behind, as in the
paper), with the exact thinned likelihood, reading serving and teacher-only
features. Its summary (cutoff, examples trained on, steps and examples seen,
sizes) is written beside the model in assets.extra/training_summary.json and
logged. Its steps come from the examples it trains on (model.teacher.epochs,
max_steps) unless model.teacher.train_steps sets them.
"""

from typing import Dict, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging

import config as config_lib
from config.dataset import DatasetSpec
from models import data
from models import export
from models import losses
from models import panel_calibration
from models import towers
from models import training
from observation import snapshot
from schemas import columns


def lag_summary(patterns: Sequence[str], lag_hours: float,
                dataset: DatasetSpec) -> Dict:
  """One pass over click times: T, the cutoff T - lag, and what lies before it.

  Raises:
    ValueError: no example is older than the cutoff, or the examples disagree on T.
  """
  labels_ = columns.labels(dataset.window_names())
  ds = data.raw_dataset(patterns, [columns.CLICK_TS, columns.SNAPSHOT_TS] +
                        list(labels_), 8192, dataset,
                        shuffle=False, repeat=False, drop_remainder=False)
  total = kept = 0
  conversions = np.zeros(len(labels_), np.int64)
  latest_kept = -1
  snapshots = set()
  lag = snapshot.hours_to_seconds(lag_hours)
  for batch in ds.as_numpy_iterator():
    ts = batch[columns.CLICK_TS][:, 0]
    snap = batch[columns.SNAPSHOT_TS][:, 0]
    snapshots.update(np.unique(snap).tolist())
    keep = ts <= snap - lag
    total += len(ts)
    kept += int(keep.sum())
    conversions += [int(batch[c][keep].sum()) for c in labels_]
    if keep.any():
      latest_kept = max(latest_kept, int(ts[keep].max()))
  if len(snapshots) != 1:
    raise ValueError(f'training examples disagree on T: {sorted(snapshots)[:5]}')
  t = snapshots.pop()
  cutoff = t - lag
  if kept == 0:
    raise ValueError(
        f'no training click is at or before T - teacher_lag_hours = '
        f'{snapshot.from_ts(cutoff).isoformat()}: the window is shorter than the lag')
  return {
      'snapshot_time': snapshot.from_ts(t).isoformat(),
      'teacher_lag_hours': lag_hours,
      'cutoff_time': snapshot.from_ts(cutoff).isoformat(),
      'cutoff_ts': cutoff,
      'train_split_examples': total,
      'examples_trained_on': kept,
      'latest_click_trained_on': snapshot.from_ts(latest_kept).isoformat(),
      'latest_click_ts_trained_on': latest_kept,
      # Per window: how many reported conversions its head is fit to, which
      # bounds how well calibrated it can be (the TeacherGate's tolerance).
      'reported_conversions_trained_on': dict(zip(dataset.window_names(),
                                                  conversions.tolist())),
  }


def training_dataset(patterns: Sequence[str], tft_layer, cfg: config_lib.Config,
                     shuffle: bool = True, repeat: bool = True,
                     panel_tables=None) -> tf.data.Dataset:
  """The teacher's training batches: train-split clicks at or before T - lag."""
  ds = data.model_dataset(patterns, tft_layer, cfg.dataset.teacher_features(),
                          cfg.model.teacher.batch_size, cfg.dataset, shuffle=shuffle,
                          repeat=repeat, extra_targets=extra_targets(cfg),
                          keep=data.lag_filter(cfg.window.teacher_lag_hours),
                          seed=cfg.model.seed,
                          shuffle_buffer=cfg.model.shuffle_buffer,
                          read_parallelism=cfg.model.read_parallelism)
  return with_panel_calibration(ds, cfg, panel_tables)


def with_panel_calibration(ds: tf.data.Dataset, cfg: config_lib.Config,
                           panel_tables) -> tf.data.Dataset:
  """The batches with the panel flag under losses.IN_PANEL and, with tables,
  panel-calibrated offsets (model.teacher_panel_calibration)."""
  panel = cfg.dataset.panel
  m = cfg.model
  if not (m.teacher_observability_head or m.teacher_panel_calibration):
    return ds

  def rename(features, targets):
    targets = dict(targets)
    targets[losses.IN_PANEL] = targets.pop(panel)
    return features, targets
  ds = ds.map(rename)
  if panel_tables is None:
    return ds
  keys = panel_calibration.PanelKeys.of(cfg.dataset)
  return ds.map(lambda features, targets: (
      features, panel_calibration.calibrate_targets(targets, panel_tables, keys)))


def extra_targets(cfg: config_lib.Config) -> Sequence[str]:
  """Targets beyond data.target_columns: panel membership for the
  observability head and the panel calibration, and the calibration's lookup
  columns."""
  m = cfg.model
  cols = []
  if m.teacher_observability_head or m.teacher_panel_calibration:
    cols.append(cfg.dataset.panel)
  if m.teacher_panel_calibration:
    cols += list(panel_calibration.PanelKeys.of(cfg.dataset).key_columns())
  return cols


def run_fn(fn_args) -> None:
  """TFX Trainer entry point for the teacher."""
  cfg = config_lib.from_trainer_custom_config(fn_args.custom_config)
  # Before any dataset exists (see training.set_seed).
  training.set_seed(cfg.model.seed)
  t = cfg.model.teacher
  summary = lag_summary(fn_args.train_files, cfg.window.teacher_lag_hours,
                        cfg.dataset)
  logging.info('teacher: trains on %d of %d train-split examples (clicks up to the '
               'cutoff %s, T - %.0f h)', summary['examples_trained_on'],
               summary['train_split_examples'], summary['cutoff_time'],
               cfg.window.teacher_lag_hours)
  tft_layer = tft.TFTransformOutput(
      fn_args.transform_graph_path).transform_features_layer()
  tables = (panel_calibration.fit_from_files(
      fn_args.train_files, 'model.teacher_panel_calibration', cfg.dataset)
            if cfg.model.teacher_panel_calibration else None)
  # Its length from the examples it trains on (counted by lag_summary's pass).
  length = training.resolve_steps(fn_args, t, lambda: summary['examples_trained_on'])
  logging.info('teacher: training length %s', length)
  train = training_dataset(fn_args.train_files, tft_layer, cfg, panel_tables=tables)
  evaluation = with_panel_calibration(data.model_dataset(
      fn_args.eval_files, tft_layer, cfg.dataset.teacher_features(), t.batch_size,
      cfg.dataset, shuffle=False, extra_targets=extra_targets(cfg)), cfg, tables)
  network = towers.build_teacher(cfg)
  model = training.LossModel(network, losses.teacher_loss)
  model.compile(optimizer=training.optimizer(t, fn_args.train_steps))
  history = training.fit(model, train, evaluation, fn_args, batch_size=t.batch_size)
  summary.update({
      'train_steps': fn_args.train_steps,
      'batch_size': t.batch_size,
      'examples_seen': int(history.params.get('steps') or 0) * t.batch_size,
      'training_length': length,
      'final_train_loss': float(history.history['loss'][-1]),
      'eval_loss': float(history.history['val_loss'][-1]),
      'parameters': towers.parameter_counts(network),
      'observability_head': cfg.model.teacher_observability_head,
  })
  if tables is not None:
    summary['panel_calibration'] = panel_calibration.summary(tables)
  export.save_teacher(network, tft_layer, fn_args.serving_model_dir, summary,
                      cfg.dataset, tables)
  logging.info('teacher: summary %s', summary)
