"""Input pipelines: gzip TFRecords -> parsed, transformed batches (on the host).

Parsing and the Transform graph run in tf.data on the host CPU; the model sees
dense, statically shaped batches (drop_remainder), as TPUs need
(docs/architecture.md §5).
Elements are (features, targets): transformed model features by name, and
float32 targets (counts, exposures, observed fraction, and whatever else asked).
"""

from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from config.dataset import DatasetSpec
from models import features as features_lib
from models import losses
from observation import snapshot
import schemas
from schemas import columns
from schemas import records

Batch = Dict[str, tf.Tensor]


def column_spec(names: Sequence[str], dataset: DatasetSpec,
                schema_path: str = '') -> Dict[str, tf.io.FixedLenFeature]:
  """Parsing spec: scalars as [1]; teacher_hint as [the width the schema
  declares] (the pipeline's width without a schema)."""
  spec = {}
  for name in names:
    if name == columns.TEACHER_HINT:
      spec[name] = tf.io.FixedLenFeature([schemas.hint_width(schema_path)], tf.float32)
    else:
      spec.update(features_lib.raw_feature_spec([dataset.column(name)]))
  return spec


def target_columns(window_names: Sequence[str]) -> Tuple[str, ...]:
  """The columns every loss reads: counts, exposures, times."""
  return columns.labels(window_names) + columns.exposures(window_names) + (
      columns.observed_exposures(window_names) + (
          columns.OBSERVED_FRACTION, columns.CLICK_TS, columns.SNAPSHOT_TS))


def raw_dataset(patterns: Sequence[str], names: Sequence[str], batch_size: int,
                dataset: DatasetSpec, shuffle: bool = True, repeat: bool = True,
                keep: Optional[Callable[[Batch], tf.Tensor]] = None,
                drop_remainder: bool = True, seed: Optional[int] = None,
                schema_path: str = '',
                shuffle_buffer: int = 1_000_000) -> tf.data.Dataset:
  """Batches of parsed columns `names`, optionally filtered per example by `keep`.

  With `shuffle`, files are read in a shuffled order and examples pass through a
  `shuffle_buffer`-example buffer (config model.shuffle_buffer: see why there).
  """
  # Training sorts by click_id (sorted_by_click_id); read it just for that.
  id_for_sort = repeat and columns.CLICK_ID not in names
  spec = column_spec(list(names) + ([columns.CLICK_ID] if id_for_sort else []),
                     dataset, schema_path)
  files = records.list_files(patterns)
  if shuffle:
    files = list(np.random.default_rng(seed).permutation(files))
  ds = tf.data.TFRecordDataset(files, compression_type='GZIP',
                               num_parallel_reads=tf.data.AUTOTUNE)

  def parse(records_batch):
    return tf.io.parse_example(records_batch, spec)
  if repeat:
    # Training: decompress, parse and filter the split once and keep the parsed
    # examples in host memory (the shuffle buffer already holds the whole
    # window, serialized), then shuffle and batch them every epoch. Re-reading
    # gzip and re-parsing every epoch made the input pipeline, not the model,
    # the cost of a training step.
    ds = ds.batch(4096).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    if keep is not None:
      ds = ds.filter(keep)
    ds = sorted_by_click_id(ds)
    if id_for_sort:
      ds = ds.map(lambda e: {k: v for k, v in e.items() if k != columns.CLICK_ID})
    ds = ds.cache()
    if shuffle:
      ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return ds.repeat().batch(batch_size, drop_remainder=drop_remainder)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  if keep is None:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
  else:
    # Parse in large batches (fast), filter per example, re-batch statically.
    ds = ds.batch(1024).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.unbatch().filter(keep).batch(batch_size, drop_remainder=drop_remainder)
  return ds


def to_targets(batch: Batch, window_names: Sequence[str]) -> Batch:
  """The float32 targets the losses read (window columns stacked as [B, W])."""
  w = window_names
  out = {
      losses.COUNTS: tf.cast(tf.concat([batch[c] for c in columns.labels(w)], 1),
                             tf.float32),
      losses.EXPOSURES: tf.concat([batch[c] for c in columns.exposures(w)], 1),
      losses.OBSERVED_EXPOSURES: tf.concat(
          [batch[c] for c in columns.observed_exposures(w)], 1),
      losses.OBSERVED_FRACTION: batch[columns.OBSERVED_FRACTION],
  }
  for name in (columns.CLICK_TS, columns.SNAPSHOT_TS):
    out[name] = batch[name]
  return out


def sorted_by_click_id(ds: tf.data.Dataset) -> tf.data.Dataset:
  """The examples of `ds` (unbatched) in click_id order.

  Why: the ExampleGen's Beam write puts the same examples into shards in a
  different order on every run, and a seeded shuffle of a different order is a
  different training run. Sorting first makes the same examples and seed train
  the same model, whatever the files. The split is held in memory for training
  anyway (the cache below); this batches it whole once to sort it.
  """
  def sort(batch):
    order = tf.argsort(tf.reshape(batch[columns.CLICK_ID], [-1]), stable=True)
    return {k: tf.gather(v, order) for k, v in batch.items()}
  return ds.batch(np.iinfo(np.int64).max).map(sort).unbatch()


def model_dataset(patterns: Sequence[str], tft_layer,
                  features: Sequence[columns.Column], batch_size: int,
                  dataset: DatasetSpec, extra_targets: Sequence[str] = (),
                  **kwargs) -> tf.data.Dataset:
  """(transformed features, targets) batches for training or evaluation."""
  feature_names = features_lib.names(features)
  window_names = dataset.window_names()
  names = list(dict.fromkeys(feature_names + list(target_columns(window_names)) +
                             list(extra_targets)))

  def split(batch):
    transformed = tft_layer({n: batch[n] for n in feature_names})
    targets = to_targets(batch, window_names)
    for name in extra_targets:
      targets[name] = batch[name]
    return {n: transformed[n] for n in feature_names}, targets

  ds = raw_dataset(patterns, names, batch_size, dataset, **kwargs)
  return ds.map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
      tf.data.AUTOTUNE)


def lag_filter(lag_hours: float) -> Callable[[Batch], tf.Tensor]:
  """Keeps examples with click_ts <= snapshot_ts - lag (the teacher's cutoff)."""
  lag = tf.constant(snapshot.hours_to_seconds(lag_hours), tf.int64)

  def keep(example):
    return example[columns.CLICK_TS][0] <= example[columns.SNAPSHOT_TS][0] - lag
  return keep
