"""Input pipelines: gzip TFRecords -> parsed, transformed batches (on the host).

Parsing and the Transform graph run in tf.data on the host CPU; the model sees
dense, statically shaped batches (drop_remainder), as TPUs need
(docs/architecture.md §5).
Elements are (features, targets): transformed model features by name, and
float32 targets (counts, exposures, observed fraction, and whatever else asked).
"""

from typing import Callable, Dict, Optional, Sequence, Tuple

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


def training_files(patterns: Sequence[str]) -> tf.data.Dataset:
  """The files of `patterns` in name order (records.list_files sorts them)."""
  return tf.data.Dataset.from_tensor_slices(records.list_files(patterns))


def raw_dataset(patterns: Sequence[str], names: Sequence[str], batch_size: int,
                dataset: DatasetSpec, shuffle: bool = True, repeat: bool = True,
                keep: Optional[Callable[[Batch], tf.Tensor]] = None,
                drop_remainder: bool = True, seed: Optional[int] = None,
                schema_path: str = '', shuffle_buffer: int = 65_536,
                read_parallelism: int = 4) -> tf.data.Dataset:
  """Batches of parsed columns `names`, optionally filtered per example by `keep`.

  A stream, never the whole split in memory: the files in name order (permuted
  by the seed every epoch with `shuffle`), read `read_parallelism` at a time and
  interleaved record by record in a fixed order (deterministic=True), the
  serialized records through a seeded `shuffle_buffer`-record buffer
  (config model.shuffle_buffer: see why there), then parsed a batch at a time.
  Peak memory is the buffer, the readers and the batches in flight, whatever
  the split holds. The same files and seed give the same batches: the
  ExampleGen writes the same examples into the same files in the same order
  (each file a hash-of-click_id shard of the whole window, in hash order:
  components/example_gen/executor.py), which is also what makes a bounded
  buffer a sound shuffle.
  """
  spec = column_spec(names, dataset, schema_path)
  files = training_files(patterns)
  n_files = int(files.cardinality())
  if shuffle:
    # A new permutation every epoch, the same ones for the same seed.
    files = files.shuffle(n_files, seed=seed, reshuffle_each_iteration=True)
  if repeat:
    files = files.repeat()
  parallel = max(1, min(read_parallelism, n_files))
  ds = files.interleave(
      lambda f: tf.data.TFRecordDataset(f, compression_type='GZIP'),
      cycle_length=parallel, block_length=1, num_parallel_calls=parallel,
      deterministic=True)
  if shuffle:
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

  def parse(records_batch):
    return tf.io.parse_example(records_batch, spec)
  if keep is None:
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  # Parse and filter in large batches (`keep` vectorised over the batch), then
  # re-batch statically: per-example filtering made the read the cost of a step.
  def parse_and_keep(records_batch):
    parsed = parse(records_batch)
    mask = tf.vectorized_map(keep, parsed)
    return {k: tf.boolean_mask(v, mask) for k, v in parsed.items()}
  ds = ds.batch(1024).map(parse_and_keep, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return ds.rebatch(batch_size, drop_remainder=drop_remainder)


def count_records(patterns: Sequence[str], read_parallelism: int = 4) -> int:
  """The number of records in `patterns`' files: one streaming pass that
  decompresses but does not parse (the student's count; the teacher counts
  its lag-filtered examples in the pass it makes anyway)."""
  files = training_files(patterns)
  parallel = max(1, min(read_parallelism, int(files.cardinality())))
  ds = files.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type='GZIP'),
                        cycle_length=parallel, num_parallel_calls=parallel)
  sizes = ds.batch(65536).map(lambda b: tf.size(b, out_type=tf.int64))
  return int(sizes.reduce(tf.constant(0, tf.int64), lambda a, b: a + b))


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
