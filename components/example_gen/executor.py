"""ConversionLogExampleGen executor: the as-of-T join in Beam.

  click log -> checked, normalised rows in [T - W, T) --key by click_id-----------\\
                                                CoGroupByKey -> per click: checks,
  conversion log -> checked rows --by conversion_id: one per id,   the cap -> batches
                    reported by T--key by click_id-------------/       |        |
                                     delays of reported conversions <--'        |
                                     -> the delay fit (a side input) -> labels_as_of
                                                                   -> train / eval

The logs are whatever the dataset spec declares (config/dataset.py): TFRecord,
Parquet or CSV day partitions read file by file through tf.io.gfile, or BigQuery
tables or queries with the window in the SQL (sources.py). Rows are checked and
normalised to the example's columns by `inputs.py` (every failure one line naming
file, column, rule and spec key); the labels are `observation.labels` (pure,
vectorised); the delay distribution every exposure uses is fitted here on the
window's reported conversions (`observation.delay_fit`), or is the spec's prior
with delay.source prior. This module only moves rows. Output: an Examples
artifact with splits `train` and `eval`, and `tune` (a hashed share of the train
window's clicks) when tune_fraction > 0 (gzip TFRecords of tf.Example, sharded by
a hash of click_id and in hash order: WriteShards), T and the
input counts as custom properties; and a DelayModel artifact with the fit
(`delay_fit.json`).
"""

import json
import os
import re
from typing import Any, Dict, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.components.example_gen import write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils

from components import artifacts
from components.example_gen import inputs
from components.example_gen import sources
from components.example_gen import window as window_lib
from config import loader as config_loader
from config.dataset import DatasetSpec
from observation import delay_fit
from observation import labels
from observation import snapshot
from schemas import codec
from schemas import columns

# Output and parameter keys (the component spec and the tests use these).
EXAMPLES_KEY = 'examples'
DATA_ROOT_KEY = 'data_root'
WINDOW_DAYS_KEY = 'window_days'
EVAL_DAYS_KEY = 'eval_days'
SNAPSHOT_TIME_KEY = 'snapshot_time'
SNAPSHOT_POLICY_KEY = 'snapshot_policy'
# JSON of observation.labels.LabelSpec.
LABEL_SPEC_KEY = 'label_spec'
# JSON of the dataset spec (config.dataset.DatasetSpec): the logs and columns.
DATASET_KEY = 'dataset'
# The fitted delay distribution (a DelayModel artifact holding DELAY_FIT_FILE).
DELAY_MODEL_KEY = 'delay_model'
DELAY_FIT_FILE = 'delay_fit.json'
# config.ExampleGenConfig; optional, so templates compiled before them still run.
MAX_CONVERSIONS_PER_CLICK_KEY = 'max_conversions_per_click'
MAX_CAPPED_FRACTION_KEY = 'max_capped_fraction'
DEFAULT_MAX_CONVERSIONS = 20
DEFAULT_MAX_CAPPED_FRACTION = 0.001

# TUNE_FRACTION_KEY > 0 adds the tune split (sweeps: config.SweepConfig).
TUNE_FRACTION_KEY = 'tune_fraction'
TRAIN, EVAL, TUNE = 'train', 'eval', 'tune'
SPLITS = (TRAIN, EVAL)
ALL_SPLITS = (TRAIN, EVAL, TUNE)


# Each split is written as ceil(records / RECORDS_PER_SHARD) gzip shards, by a
# hash of click_id (salted apart from the tune split's hash), each in hash order
# (WriteShards). 20k records is ~10 MB of examples to sort per shard, and ~4
# shards for the default world's training window, which training reads in
# parallel (model.read_parallelism).
RECORDS_PER_SHARD = 20_000
SHARD_SALT = 0x5EED5


def split_names(tune_fraction: float):
  """The splits written: train and eval, and tune when it has a share."""
  return ALL_SPLITS if tune_fraction and tune_fraction > 0 else SPLITS
_NAMESPACE = 'ConversionLogExampleGen'


def dataset_from_json(text: str) -> DatasetSpec:
  """The ExampleGen's `dataset` parameter back as a spec (built and checked as
  the config loader does)."""
  return config_loader.dataset_from_dict(json.loads(text))


class _ReadLog(beam.DoFn):
  """A log file's index (or a batch of BigQuery rows) -> its checked rows, keyed
  for the join.

  Files are read here through tf.io.gfile (local, gs://, any TensorFlow file
  system) rather than by Beam's file sources, so a broken file or row fails
  naming the file and the column (inputs.py), not with a bare decoder error.

  Clicks: click_id -> (file index, click_ts, delay segment, observability row,
  the example's record); conversions: conversion_id -> (click_id, ts, file
  index, count).
  """

  def __init__(self, log: str, dataset_json: str, label_spec: str,
               files: List[str], start_ts: int, snapshot_ts: int,
               data_root: str = ''):
    self._log, self._dataset_json, self._label_spec = log, dataset_json, label_spec
    self._files = files
    self._start, self._end = start_ts, snapshot_ts
    self._outside = beam.metrics.Metrics.counter(_NAMESPACE, 'clicks_outside_window')
    del data_root

  def setup(self):
    self._spec = dataset_from_json(self._dataset_json)
    self._labels = labels.LabelSpec.from_json(self._label_spec)
    self._rules = inputs.log_rules(self._spec, self._log)
    self._columns = [r.column for r in self._rules]
    self._fmt = self._spec.source.format
    self._names = [c.name for c in self._spec.example_columns()]
    # The synthetic world's TFRecords already hold the example's columns.
    self._records_as_is = self._fmt == 'tfrecord' and all(
        r.passes_through() for r in self._rules)

  def process(self, index: int):
    path = self._files[index]
    try:
      for row, rows, serialized in sources.read_file(
          self._fmt, path, self._columns, self._spec.source.csv_delimiter):
        if serialized is not None:
          try:
            rows = sources.decode_examples(serialized)
          except Exception as e:  # pylint: disable=broad-except
            raise inputs.locate_decode_error(path, self._log, serialized, row,
                                             e) from None
        cols = inputs.normalize(path, self._log, rows, self._rules, row)
        yield from self._keyed(index, cols, serialized)
    except tf.errors.OpError as e:
      raise inputs.read_error(path, e) from None
    except (OSError, ValueError) as e:
      if isinstance(e, inputs.InputError):
        raise
      raise inputs.InputError(f'{path}: not a readable {self._fmt} file '
                              f'({str(e).splitlines()[0] if str(e) else e!r})'
                              ) from None

  def _keyed(self, index, cols, serialized):
    if not cols:
      return
    if self._log == sources.CLICKS:
      ts = cols[columns.CLICK_TS]
      keep = (ts >= self._start) & (ts < self._end)
      self._outside.inc(int((~keep).sum()))
      if not keep.any():
        return
      if serialized is not None and self._records_as_is:
        records_ = [serialized[i] for i in np.flatnonzero(keep)]
      else:
        records_ = codec.encode({n: cols[n][keep] for n in self._names if n in cols})
      kept = {k: v[keep] for k, v in cols.items()}
      fit = labels.conversion_keys(kept, self._labels)
      for i, (cid, t, record) in enumerate(zip(kept[columns.CLICK_ID],
                                               kept[columns.CLICK_TS], records_)):
        yield int(cid), (index, int(t), int(fit[0][i]), int(fit[1][i]), record)
    else:
      count = cols.get(columns.CONVERSION_COUNT)
      for i, (cid, click, ts) in enumerate(zip(
          cols[columns.CONVERSION_ID], cols[columns.CLICK_ID],
          cols[columns.CONVERSION_TS])):
        yield int(cid), (int(click), int(ts), index,
                         1 if count is None else int(count[i]))


class _RowsToTable(beam.DoFn):
  """A batch of BigQuery rows (dicts) -> the same keyed rows as a file's."""

  def __init__(self, reader: _ReadLog, columns_: List[str]):
    self._reader, self._columns = reader, columns_

  def setup(self):
    self._reader.setup()

  def process(self, rows: List[Dict]):
    table = sources.rows_to_table(rows, self._columns)
    cols = inputs.normalize(self._reader._files[0], self._reader._log, table,  # pylint: disable=protected-access
                            self._reader._rules)  # pylint: disable=protected-access
    yield from self._reader._keyed(0, cols, None)  # pylint: disable=protected-access


class _DedupConversion(beam.DoFn):
  """(conversion_id, copies) -> (click_id, (conversion_ts, conversion_id, file
  index)) once per conversion the row stands for, if reported by T; exact copies
  dropped and counted."""

  def __init__(self, files: List[str], snapshot_ts: int):
    self._files = files
    self._end = snapshot_ts
    self._late = beam.metrics.Metrics.counter(_NAMESPACE, 'conversions_after_t')
    self._copies = beam.metrics.Metrics.counter(_NAMESPACE,
                                                'conversion_duplicates_dropped')

  def process(self, element):
    conversion_id, copies = element
    copies = list(copies)
    if len(copies) > 1:
      inputs.dedup_conversion(conversion_id, [(c, t, self._files[i])
                                              for c, t, i, _ in copies])
      self._copies.inc(len(copies) - 1)
    click_id, ts, index, count = copies[0]
    if ts <= self._end:
      for _ in range(count):
        yield click_id, (ts, conversion_id, index)
    else:
      self._late.inc()


class _PerClick(beam.DoFn):
  """(click_id, {clicks, conversions}) -> (click, kept conversions): one click
  row, conversions not before it, at most `cap` (the earliest)."""

  def __init__(self, click_files: List[str], conversion_files: List[str], cap: int):
    self._click_files, self._conversion_files = click_files, conversion_files
    self._cap = cap
    self._orphans = beam.metrics.Metrics.counter(
        _NAMESPACE, 'conversions_of_clicks_outside_window')
    self._capped = beam.metrics.Metrics.counter(_NAMESPACE, 'clicks_capped')
    self._over_cap = beam.metrics.Metrics.counter(_NAMESPACE,
                                                  'conversions_over_cap_dropped')

  def process(self, element):
    click_id, grouped = element
    clicks, convs = list(grouped['clicks']), list(grouped['conversions'])
    if not clicks:
      self._orphans.inc(len(convs))
      return
    if len(clicks) > 1:
      files = sorted({self._click_files[c[0]] for c in clicks})
      raise inputs.InputError(
          f'{", ".join(files)}: column {columns.CLICK_ID} {click_id} is duplicated '
          f'({len(clicks)} rows); one row per click')
    index, click_ts, group, row, record = clicks[0]
    named = [(ts, cid, self._conversion_files[i]) for ts, cid, i in convs]
    inputs.check_after_click(click_id, click_ts, self._click_files[index], named)
    kept = inputs.cap_conversions(named, self._cap)
    if len(kept) < len(named):
      # A bulk purchase keeps the earliest `cap` conversions; counted, and the
      # executor fails the run only if too many clicks needed it.
      self._capped.inc()
      self._over_cap.inc(len(named) - len(kept))
      logging.warning('click_id %d (%s): %d conversions, the earliest %d kept',
                      click_id, self._click_files[index], len(named), len(kept))
    yield (click_id, click_ts, group, row, record), [ts for ts, _, _ in kept]


class _Delays(beam.CombineFn):
  """The reported conversions' delays, ages, segments and observability rows,
  fitted into the delay model (observation.delay_fit)."""

  def __init__(self, label_spec: str, snapshot_ts: int):
    self._label_spec, self._t = label_spec, snapshot_ts

  def create_accumulator(self):
    return []

  def add_input(self, acc, element):
    (_, click_ts, group, row, _), conversion_ts = element
    for ts in conversion_ts:
      acc.append((ts - click_ts, self._t - click_ts, group, row))
    return acc

  def merge_accumulators(self, accs):
    return [x for acc in accs for x in acc]

  def extract_output(self, acc):
    spec = labels.LabelSpec.from_json(self._label_spec)
    return labels.fit_delay(spec, np.asarray(acc, np.float64).reshape(-1, 4)).to_json()


class _JoinBatch(beam.DoFn):
  """A batch of (click, conversion times) -> joined examples by split."""

  def __init__(self, spec: labels.LabelSpec, example_columns: List[str],
               snapshot_ts: int, eval_start_ts: int, tune_fraction: float = 0.0):
    self._spec = spec
    self._example_columns = example_columns
    self._tune_fraction = tune_fraction
    self._t = snapshot_ts
    self._eval_start = eval_start_ts
    self._fit_json, self._fit = None, None
    self._counters = {s: beam.metrics.Metrics.counter(_NAMESPACE, f'{s}_examples')
                      for s in ALL_SPLITS}
    self._joined = beam.metrics.Metrics.counter(_NAMESPACE, 'conversions_joined')

  def process(self, batch: List[Any], fit_json: str):
    if fit_json != self._fit_json:
      self._fit_json, self._fit = fit_json, delay_fit.DelayFit.from_json(fit_json)
    records_: List[bytes] = []
    conv_id: List[int] = []
    conv_ts: List[int] = []
    for (click_id, _, _, _, record), kept in batch:
      records_.append(record)
      conv_id += [click_id] * len(kept)
      conv_ts += kept
    if not records_:
      return
    cols = codec.decode(records_)
    joined = labels.join_window(cols, np.asarray(conv_id, np.int64),
                                np.asarray(conv_ts, np.int64), self._t, self._spec,
                                self._fit, self._example_columns)
    self._joined.inc(len(conv_id))
    is_eval = joined[columns.CLICK_TS] >= self._eval_start
    # Tune clicks come from the train window only: the eval split stays whole.
    is_tune = ~is_eval & window_lib.tune_mask(joined[columns.CLICK_ID],
                                              self._tune_fraction)
    order = order_keys(joined[columns.CLICK_ID])
    for record, ev, tune, key in zip(codec.encode(joined), is_eval, is_tune, order):
      split = EVAL if ev else TUNE if tune else TRAIN
      self._counters[split].inc()
      yield beam.pvalue.TaggedOutput(split, (int(key), record))


def order_keys(click_ids) -> np.ndarray:
  """Each click's shard and place in it: a salted hash of click_id, 63 bits (an
  int64, as Beam's coders carry ints)."""
  return (window_lib.click_hash(click_ids, SHARD_SALT) >> np.uint64(1)).astype(np.int64)


def num_shards(count: int, per_shard: int = RECORDS_PER_SHARD) -> int:
  """Shards of a split of `count` records: at most `per_shard` each, at least one."""
  return max(1, -(-int(count) // per_shard))


def shard_path(split_dir: str, shard: int, shards: int) -> str:
  """A shard's file, named as Beam's sharded TFRecord write names them."""
  return os.path.join(split_dir, f'{write_split.DEFAULT_FILE_NAME}-{shard:05d}-of-'
                      f'{shards:05d}.gz')


class _WriteShard(beam.DoFn):
  """(shard, [(hash, record)]) -> the shard's gzip TFRecord file, records in
  hash order (ties by record bytes), written under a temporary name and renamed."""

  def __init__(self, split_dir: str):
    self._dir = split_dir

  def process(self, element, shards: int):
    shard, keyed = element
    path = shard_path(self._dir, shard, shards)
    tmp = os.path.join(os.path.dirname(self._dir),
                       f'.{os.path.basename(self._dir)}-{shard:05d}.tmp')
    tf.io.gfile.makedirs(self._dir)
    with tf.io.TFRecordWriter(tmp, options='GZIP') as writer:
      for _, record in sorted(keyed):
        writer.write(record)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    yield path


@beam.ptransform_fn
def WriteShards(keyed_records, split_dir: str,  # pylint: disable=invalid-name
                per_shard: int = RECORDS_PER_SHARD):
  """Writes (hash of click_id, record) pairs as gzip TFRecord shards of a split.

  Why not Beam's sharded write (WriteSplit): its shards hold whatever order the
  runner delivered, which for this join is runs sorted by day, so a bounded
  training shuffle saw one day at a time; and another run of the same window
  wrote the same examples in another order, a different training run. Here a
  record's shard is its click hash modulo the number of shards and each shard
  is written in hash order: every shard is a random sample of the whole window
  in an order unrelated to time, and the same examples give the same files,
  byte for byte, on any runner.
  """
  shards = (keyed_records | 'Count' >> beam.combiners.Count.Globally()
            | 'Shards' >> beam.Map(num_shards, per_shard))
  return (keyed_records
          | 'ByShard' >> beam.Map(lambda kv, k: (kv[0] % k, kv),
                                  beam.pvalue.AsSingleton(shards))
          | 'GroupShards' >> beam.GroupByKey()
          | 'WriteShard' >> beam.ParDo(_WriteShard(split_dir),
                                       beam.pvalue.AsSingleton(shards)))


def _input_error(error: Exception):
  """The InputError behind a failed Beam run, as one line, or None.

  In process Beam re-raises the DoFn's error with "[while running '<step>']"
  appended; across processes it raises a RuntimeError holding the worker's
  traceback, whose "InputError: <message>" line is the one to keep.
  """
  if isinstance(error, inputs.InputError):
    message = str(error)
  else:
    found = re.findall(r'InputError: ([^\n]*)', str(error))
    if not found:
      return None
    message = found[-1]
  return inputs.InputError(re.sub(r"( \[while running '.*?'\])+$", '', message))


def _counter(result, name: str) -> int:
  query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(
      _NAMESPACE).with_name(name))
  return int(sum(c.committed or c.attempted or 0 for c in query['counters']))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Builds the window's joined examples as of T."""

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    del input_dict
    examples = artifact_utils.get_single_instance(output_dict[EXAMPLES_KEY])
    tune_fraction = float(exec_properties.get(TUNE_FRACTION_KEY) or 0.0)
    written = split_names(tune_fraction)
    examples.split_names = artifact_utils.encode_split_names(list(written))
    data_root = exec_properties[DATA_ROOT_KEY]
    dataset_json = exec_properties[DATASET_KEY]
    dataset = dataset_from_json(dataset_json)
    window = window_lib.resolve_window(
        data_root, dataset, exec_properties.get(SNAPSHOT_TIME_KEY) or '',
        exec_properties[SNAPSHOT_POLICY_KEY], exec_properties[WINDOW_DAYS_KEY],
        exec_properties[EVAL_DAYS_KEY])
    label_json = exec_properties[LABEL_SPEC_KEY]
    spec = labels.LabelSpec.from_json(label_json)
    t = snapshot.to_ts(window.snapshot)
    start = snapshot.to_ts(window.start)
    cap = exec_properties.get(MAX_CONVERSIONS_PER_CLICK_KEY) or DEFAULT_MAX_CONVERSIONS
    max_capped = exec_properties.get(MAX_CAPPED_FRACTION_KEY)
    max_capped = DEFAULT_MAX_CAPPED_FRACTION if max_capped is None else max_capped
    delay_model = artifact_utils.get_single_instance(output_dict[DELAY_MODEL_KEY])
    fit_path = os.path.join(delay_model.uri, DELAY_FIT_FILE)

    pipeline = self._make_beam_pipeline()
    read, files = {}, {}
    for log in sources.LOGS:
      if dataset.source.format == 'bigquery':
        rules = inputs.log_rules(dataset, log)
        cols = [r.column for r in rules]
        query = sources.bigquery_sql(dataset, log, cols, window.start,
                                     window.snapshot)
        source = getattr(dataset.source, log)
        files[log] = [f'bigquery:{source.table or "query"} ({log})']
        logging.info('ConversionLogExampleGen: %s from BigQuery: %s', log, query)
        reader = _ReadLog(log, dataset_json, label_json, files[log], start, t)
        read[log] = (
            sources.read_bigquery(pipeline, f'Query[{log}]', query,
                                  dataset.source.project)
            | f'BatchRows[{log}]' >> beam.BatchElements(min_batch_size=1024,
                                                        max_batch_size=8192)
            | f'Read[{log}]' >> beam.ParDo(_RowsToTable(reader, cols)))
        continue
      dirs = window_lib.log_partitions(data_root, dataset, log, window)
      marker = getattr(dataset.source, log).complete_marker
      files[log] = [f for d in dirs for f in sources.partition_files(d, marker)]
      read[log] = (
          pipeline
          | f'Files[{log}]' >> beam.Create(range(len(files[log])))
          | f'Spread[{log}]' >> beam.Reshuffle()
          | f'Read[{log}]' >> beam.ParDo(_ReadLog(
              log, dataset_json, label_json, files[log], start, t)))
    logging.info('ConversionLogExampleGen: T=%s, window [%s, %s), eval from %s; '
                 '%d click and %d conversion files', window.snapshot, window.start,
                 window.snapshot, window.eval_start, len(files[sources.CLICKS]),
                 len(files[sources.CONVERSIONS]))
    conversions = (
        read[sources.CONVERSIONS]
        | 'ByConversionId' >> beam.GroupByKey()
        | 'DedupConversions' >> beam.ParDo(_DedupConversion(
            files[sources.CONVERSIONS], t)))
    per_click = (
        {'clicks': read[sources.CLICKS], 'conversions': conversions}
        | 'Join' >> beam.CoGroupByKey()
        | 'PerClick' >> beam.ParDo(_PerClick(
            files[sources.CLICKS], files[sources.CONVERSIONS], cap)))
    if spec.delay_source == 'prior':
      fit = pipeline | 'Prior' >> beam.Create([labels.prior_delay(spec).to_json()])
    else:
      fit = (per_click
             | 'WithConversions' >> beam.Filter(lambda e: bool(e[1]))
             | 'FitDelay' >> beam.CombineGlobally(_Delays(label_json, t)))
    _ = fit | 'WriteFit' >> beam.Map(_write_text, fit_path)
    splits = (
        per_click
        | 'Batch' >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        | 'LabelsAsOfT' >> beam.ParDo(
            _JoinBatch(spec, [c.name for c in dataset.example_columns()], t,
                       snapshot.to_ts(window.eval_start), tune_fraction),
            beam.pvalue.AsSingleton(fit)).with_outputs(*ALL_SPLITS))
    for split in written:
      _ = splits[split] | f'Write[{split}]' >> WriteShards(
          artifact_utils.get_split_uri([examples], split))
    try:
      result = pipeline.run()
      result.wait_until_finish()
    except Exception as e:  # pylint: disable=broad-except
      error = _input_error(e)
      if error is None:
        raise
      raise error from None

    counts = {s: _counter(result, f'{s}_examples') for s in written}
    inputs.check_capped_fraction(
        _counter(result, 'clicks_capped'), sum(counts.values()), cap, max_capped,
        _log_location(data_root, dataset, sources.CONVERSIONS))
    empty = [s for s in written if counts[s] == 0]
    if empty:
      raise window_lib.WindowError(
          f'the window [{window.start.isoformat()}, {window.snapshot.isoformat()}) '
          f'has no clicks in split(s) {empty} (eval from '
          f'{window.eval_start.isoformat()}); nothing to train or evaluate on')

    examples.span = t // 86400
    examples_utils.set_payload_format(examples, example_gen_pb2.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(
        examples, write_split.to_file_format_str(example_gen_pb2.FORMAT_TFRECORDS_GZIP))
    examples.set_string_custom_property(artifacts.SNAPSHOT_TIME,
                                        window.snapshot.isoformat())
    examples.set_int_custom_property(artifacts.SNAPSHOT_TS, t)
    examples.set_string_custom_property(artifacts.WINDOW_START, window.start.isoformat())
    examples.set_string_custom_property(artifacts.EVAL_START,
                                        window.eval_start.isoformat())
    for split in written:
      examples.set_int_custom_property(f'{split}_examples', counts[split])
    examples.set_float_custom_property(TUNE_FRACTION_KEY, tune_fraction)
    joined = _counter(result, 'conversions_joined')
    examples.set_int_custom_property('conversions_joined', joined)
    for name in ('conversion_duplicates_dropped', 'clicks_capped',
                 'conversions_over_cap_dropped'):
      examples.set_int_custom_property(name, _counter(result, name))
    with tf.io.gfile.GFile(fit_path) as f:
      fitted = delay_fit.DelayFit.from_json(f.read())
    record_delay_fit(delay_model, fitted, spec)
    examples.set_string_custom_property('delay_source', fitted.source)
    logging.info('ConversionLogExampleGen: %d train and %d eval examples, %d '
                 'conversions reported by T; delay model %s', counts['train'],
                 counts['eval'], joined, fitted.source)


def _write_text(text: str, path: str) -> None:
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(text)


def _log_location(data_root: str, dataset: DatasetSpec, log: str) -> str:
  """Where a log is, for messages: its partition pattern or its table."""
  source = getattr(dataset.source, log)
  if dataset.source.format == 'bigquery':
    return f'bigquery:{source.table or "query"}'
  return os.path.dirname(sources.log_pattern(data_root, source))


def record_delay_fit(artifact, fit: delay_fit.DelayFit,
                     spec: labels.LabelSpec) -> None:
  """The fit's headline as custom properties of the DelayModel artifact: its
  source, conversions, and per window the pooled share, scale and the prior's."""
  artifact.set_string_custom_property('source', fit.source)
  artifact.set_int_custom_property('conversions', int(np.sum(fit.conversions)))
  artifact.set_int_custom_property('dropped', int(fit.dropped))
  shares = fit.pooled_shares if fit.pooled_shares is not None else fit.shares[0]
  scales = fit.pooled_scales if fit.pooled_scales is not None else fit.scales[0]
  for i, w in enumerate(spec.window_names):
    artifact.set_float_custom_property(f'share_{w}', float(shares[i]))
    artifact.set_float_custom_property(f'scale_hours_{w}', float(scales[i]))
    artifact.set_float_custom_property(f'prior_scale_hours_{w}',
                                       float(spec.prior_scales[i]))
