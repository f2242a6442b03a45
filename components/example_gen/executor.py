"""ConversionLogExampleGen executor: the as-of-T join in Beam.

  click files -> checked rows in [T - W, T) --key by click_id--------------\\
                                                   CoGroupByKey -> batches -> labels_as_of
  conversion files -> checked rows --by conversion_id: one per id,          -> train / eval
                      reported by T--key by click_id---------------------/

The label logic is `observation.labels` (pure, vectorised) and the input rules
`inputs.py` (every failure one line naming file, column and rule); this module only
moves rows. Files are read through tf.io.gfile, written by TFX's own WriteSplit
(Beam file systems), so the same code runs on local paths and gs://. Output: an
Examples artifact with splits `train` and `eval`, and `tune` (a hashed share of the
train window's clicks) when tune_fraction > 0 (gzip TFRecords of tf.Example), T
and the input counts (copies dropped, clicks capped) recorded as custom properties.
"""

import os
import re
from typing import Any, Dict, List

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
from components.example_gen import window as window_lib
from observation import labels
from observation import snapshot
from schemas import codec
from schemas import columns
from schemas import layout
from schemas import records

# Output and parameter keys (the component spec and the tests use these).
EXAMPLES_KEY = 'examples'
DATA_ROOT_KEY = 'data_root'
WINDOW_DAYS_KEY = 'window_days'
EVAL_DAYS_KEY = 'eval_days'
SNAPSHOT_TIME_KEY = 'snapshot_time'
SNAPSHOT_POLICY_KEY = 'snapshot_policy'
# JSON of observation.labels.LabelSpec.
LABEL_SPEC_KEY = 'label_spec'
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


def split_names(tune_fraction: float):
  """The splits written: train and eval, and tune when it has a share."""
  return ALL_SPLITS if tune_fraction and tune_fraction > 0 else SPLITS
_NAMESPACE = 'ConversionLogExampleGen'


class _ReadLogFile(beam.DoFn):
  """A log file's index -> its checked rows, keyed for the join.

  Files are read here through tf.io.gfile (local, gs://, any TensorFlow file
  system) rather than by Beam's TFRecord source, so a broken file or row fails
  naming the file and the column (inputs.py), not with a bare decoder error.
  """

  def __init__(self, log: str, files: List[str], start_ts: int, snapshot_ts: int):
    self._log, self._files = log, files
    self._start, self._end = start_ts, snapshot_ts
    self._outside = beam.metrics.Metrics.counter(_NAMESPACE, 'clicks_outside_window')

  def process(self, index: int):
    path = self._files[index]
    row = 0
    try:
      for batch in records.iter_batches([path]):
        cols = inputs.check_rows(path, self._log, batch, row)
        row += len(batch)
        yield from self._keyed(index, batch, cols)
    except tf.errors.OpError as e:
      raise inputs.read_error(path, e) from None

  def _keyed(self, index, batch, cols):
    if self._log == layout.CLICKS:
      ts = cols[columns.CLICK_TS]
      keep = (ts >= self._start) & (ts < self._end)
      self._outside.inc(int((~keep).sum()))
      for i in np.flatnonzero(keep):
        yield int(cols[columns.CLICK_ID][i]), (index, int(ts[i]), batch[i])
    else:
      for cid, click, ts in zip(cols[columns.CONVERSION_ID], cols[columns.CLICK_ID],
                                cols[columns.CONVERSION_TS]):
        yield int(cid), (int(click), int(ts), index)


class _DedupConversion(beam.DoFn):
  """(conversion_id, copies) -> (click_id, (conversion_ts, conversion_id, file
  index)) once, if reported by T; exact copies dropped and counted."""

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
                                              for c, t, i in copies])
      self._copies.inc(len(copies) - 1)
    click_id, ts, index = copies[0]
    if ts <= self._end:
      yield click_id, (ts, conversion_id, index)
    else:
      self._late.inc()


class _JoinBatch(beam.DoFn):
  """A batch of (click_id, {clicks, conversions}) -> joined examples by split."""

  def __init__(self, spec: labels.LabelSpec, snapshot_ts: int, eval_start_ts: int,
               click_files: List[str], conversion_files: List[str], cap: int,
               tune_fraction: float = 0.0):
    self._spec = spec
    self._tune_fraction = tune_fraction
    self._t = snapshot_ts
    self._eval_start = eval_start_ts
    self._click_files, self._conversion_files = click_files, conversion_files
    self._cap = cap
    self._counters = {s: beam.metrics.Metrics.counter(_NAMESPACE, f'{s}_examples')
                      for s in ALL_SPLITS}
    self._orphans = beam.metrics.Metrics.counter(
        _NAMESPACE, 'conversions_of_clicks_outside_window')
    self._joined = beam.metrics.Metrics.counter(_NAMESPACE, 'conversions_joined')
    self._capped = beam.metrics.Metrics.counter(_NAMESPACE, 'clicks_capped')
    self._over_cap = beam.metrics.Metrics.counter(_NAMESPACE,
                                                  'conversions_over_cap_dropped')

  def process(self, batch: List[Any]):
    records_: List[bytes] = []
    conv_id: List[int] = []
    conv_ts: List[int] = []
    for click_id, grouped in batch:
      clicks, convs = list(grouped['clicks']), list(grouped['conversions'])
      if not clicks:
        self._orphans.inc(len(convs))
        continue
      if len(clicks) > 1:
        files = sorted({self._click_files[c[0]] for c in clicks})
        raise inputs.InputError(
            f'{", ".join(files)}: column {columns.CLICK_ID} {click_id} is duplicated '
            f'({len(clicks)} rows); one row per click')
      index, click_ts, record = clicks[0]
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
      records_.append(record)
      conv_id += [click_id] * len(kept)
      conv_ts += [ts for ts, _, _ in kept]
    if not records_:
      return
    cols = codec.decode(records_)
    joined = labels.join_window(cols, np.asarray(conv_id, np.int64),
                                np.asarray(conv_ts, np.int64), self._t, self._spec)
    self._joined.inc(len(conv_id))
    is_eval = joined[columns.CLICK_TS] >= self._eval_start
    # Tune clicks come from the train window only: the eval split stays whole.
    is_tune = ~is_eval & window_lib.tune_mask(joined[columns.CLICK_ID],
                                              self._tune_fraction)
    for record, ev, tune in zip(codec.encode(joined), is_eval, is_tune):
      split = EVAL if ev else TUNE if tune else TRAIN
      self._counters[split].inc()
      yield beam.pvalue.TaggedOutput(split, record)


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
    window = window_lib.resolve_window(
        data_root, exec_properties.get(SNAPSHOT_TIME_KEY) or '',
        exec_properties[SNAPSHOT_POLICY_KEY], exec_properties[WINDOW_DAYS_KEY],
        exec_properties[EVAL_DAYS_KEY])
    spec = labels.LabelSpec.from_json(exec_properties[LABEL_SPEC_KEY])
    click_dirs = window_lib.required_partitions(data_root, layout.CLICKS, window)
    conv_dirs = window_lib.required_partitions(data_root, layout.CONVERSIONS, window)
    t = snapshot.to_ts(window.snapshot)
    logging.info('ConversionLogExampleGen: T=%s, window [%s, %s), eval from %s; '
                 '%d click and %d conversion partitions', window.snapshot,
                 window.start, window.snapshot, window.eval_start, len(click_dirs),
                 len(conv_dirs))

    click_files = [f for d in click_dirs for f in window_lib.partition_files(d)]
    conv_files = [f for d in conv_dirs for f in window_lib.partition_files(d)]
    cap = exec_properties.get(MAX_CONVERSIONS_PER_CLICK_KEY) or DEFAULT_MAX_CONVERSIONS
    max_capped = exec_properties.get(MAX_CAPPED_FRACTION_KEY)
    max_capped = DEFAULT_MAX_CAPPED_FRACTION if max_capped is None else max_capped

    pipeline = self._make_beam_pipeline()
    clicks = (
        pipeline
        | 'ClickFiles' >> beam.Create(range(len(click_files)))
        | 'SpreadClickFiles' >> beam.Reshuffle()
        | 'ReadClicks' >> beam.ParDo(_ReadLogFile(
            layout.CLICKS, click_files, snapshot.to_ts(window.start), t)))
    conversions = (
        pipeline
        | 'ConversionFiles' >> beam.Create(range(len(conv_files)))
        | 'SpreadConversionFiles' >> beam.Reshuffle()
        | 'ReadConversions' >> beam.ParDo(_ReadLogFile(
            layout.CONVERSIONS, conv_files, snapshot.to_ts(window.start), t))
        | 'ByConversionId' >> beam.GroupByKey()
        | 'DedupConversions' >> beam.ParDo(_DedupConversion(conv_files, t)))
    splits = (
        {'clicks': clicks, 'conversions': conversions}
        | 'Join' >> beam.CoGroupByKey()
        | 'Batch' >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        | 'LabelsAsOfT' >> beam.ParDo(_JoinBatch(
            spec, t, snapshot.to_ts(window.eval_start), click_files, conv_files,
            cap, tune_fraction)).with_outputs(*ALL_SPLITS))
    for split in written:
      _ = splits[split] | f'Write[{split}]' >> write_split.WriteSplit(
          artifact_utils.get_split_uri([examples], split),
          example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
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
        os.path.join(data_root, layout.CONVERSIONS))
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
    logging.info('ConversionLogExampleGen: %d train and %d eval examples, %d '
                 'conversions reported by T', counts['train'], counts['eval'], joined)
