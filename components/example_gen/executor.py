"""ConversionLogExampleGen executor: the as-of-T join in Beam.

  clicks in [T - W, T)  --key by click_id--\\
                                             CoGroupByKey -> batches -> labels_as_of
  conversions reported by T --key by click_id--/                 -> train / eval

The label logic is `observation.labels` (pure, vectorised); this module only moves
rows. Output: an Examples artifact with splits `train` and `eval` (gzip TFRecords of
tf.Example, written by TFX's own WriteSplit), T recorded as custom properties.
"""

import os
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
from components.example_gen import window as window_lib
from observation import labels
from observation import snapshot
from schemas import codec
from schemas import columns
from schemas import layout

# Output and parameter keys (the component spec and the tests use these).
EXAMPLES_KEY = 'examples'
DATA_ROOT_KEY = 'data_root'
WINDOW_DAYS_KEY = 'window_days'
EVAL_DAYS_KEY = 'eval_days'
SNAPSHOT_TIME_KEY = 'snapshot_time'
SNAPSHOT_POLICY_KEY = 'snapshot_policy'
# JSON of observation.labels.LabelSpec.
LABEL_SPEC_KEY = 'label_spec'

SPLITS = ('train', 'eval')
_NAMESPACE = 'ConversionLogExampleGen'


def _int_feature(example, name: str, what: str) -> int:
  values = example.features.feature[name].int64_list.value
  if len(values) != 1:
    raise ValueError(f'{what} row without a single int64 {name}: {example}')
  return values[0]


class _KeyClick(beam.DoFn):
  """Serialized click -> (click_id, record) if the click is in [start, T)."""

  def __init__(self, start_ts: int, snapshot_ts: int):
    self._start, self._end = start_ts, snapshot_ts
    self._outside = beam.metrics.Metrics.counter(_NAMESPACE, 'clicks_outside_window')

  def process(self, record: bytes):
    ex = tf.train.Example.FromString(record)
    ts = _int_feature(ex, columns.CLICK_TS, 'click log')
    if self._start <= ts < self._end:
      yield _int_feature(ex, columns.CLICK_ID, 'click log'), record
    else:
      self._outside.inc()


class _KeyConversion(beam.DoFn):
  """Serialized conversion -> (click_id, conversion_ts) if reported by T."""

  def __init__(self, snapshot_ts: int):
    self._end = snapshot_ts
    self._late = beam.metrics.Metrics.counter(_NAMESPACE, 'conversions_after_t')

  def process(self, record: bytes):
    ex = tf.train.Example.FromString(record)
    ts = _int_feature(ex, columns.CONVERSION_TS, 'conversion log')
    if ts <= self._end:
      yield _int_feature(ex, columns.CLICK_ID, 'conversion log'), ts
    else:
      self._late.inc()


class _JoinBatch(beam.DoFn):
  """A batch of (click_id, {clicks, conversions}) -> joined examples by split."""

  def __init__(self, spec: labels.LabelSpec, snapshot_ts: int, eval_start_ts: int):
    self._spec = spec
    self._t = snapshot_ts
    self._eval_start = eval_start_ts
    self._counters = {s: beam.metrics.Metrics.counter(_NAMESPACE, f'{s}_examples')
                      for s in SPLITS}
    self._orphans = beam.metrics.Metrics.counter(
        _NAMESPACE, 'conversions_of_clicks_outside_window')
    self._joined = beam.metrics.Metrics.counter(_NAMESPACE, 'conversions_joined')

  def process(self, batch: List[Any]):
    records: List[bytes] = []
    conv_id: List[int] = []
    conv_ts: List[int] = []
    for click_id, grouped in batch:
      clicks, convs = list(grouped['clicks']), list(grouped['conversions'])
      if not clicks:
        self._orphans.inc(len(convs))
        continue
      if len(clicks) > 1:
        raise ValueError(f'duplicate click_id {click_id} in the click log '
                         f'({len(clicks)} rows)')
      records.append(clicks[0])
      conv_id += [click_id] * len(convs)
      conv_ts += convs
    if not records:
      return
    cols = codec.decode(records)
    missing = [c for c in (columns.CLICK_ID, columns.CLICK_TS, columns.BROWSER,
                           columns.TARGET_CPA) if c not in cols]
    if missing:
      raise ValueError(f'the click log lacks column(s) {missing}; the join needs '
                       'them (schemas/columns.py)')
    joined = labels.join_window(cols, np.asarray(conv_id, np.int64),
                                np.asarray(conv_ts, np.int64), self._t, self._spec)
    self._joined.inc(len(conv_id))
    is_eval = joined[columns.CLICK_TS] >= self._eval_start
    for record, ev in zip(codec.encode(joined), is_eval):
      split = 'eval' if ev else 'train'
      self._counters[split].inc()
      yield beam.pvalue.TaggedOutput(split, record)


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
    examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
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

    pipeline = self._make_beam_pipeline()
    clicks = (pipeline
              | 'ClickPatterns' >> beam.Create([os.path.join(d, '*') for d in click_dirs])
              | 'ReadClicks' >> beam.io.ReadAllFromTFRecord()
              | 'KeyClicks' >> beam.ParDo(_KeyClick(snapshot.to_ts(window.start), t)))
    conversions = (
        pipeline
        | 'ConversionPatterns' >> beam.Create([os.path.join(d, '*') for d in conv_dirs])
        | 'ReadConversions' >> beam.io.ReadAllFromTFRecord()
        | 'KeyConversions' >> beam.ParDo(_KeyConversion(t)))
    splits = (
        {'clicks': clicks, 'conversions': conversions}
        | 'Join' >> beam.CoGroupByKey()
        | 'Batch' >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        | 'LabelsAsOfT' >> beam.ParDo(_JoinBatch(
            spec, t, snapshot.to_ts(window.eval_start))).with_outputs(*SPLITS))
    for split in SPLITS:
      _ = splits[split] | f'Write[{split}]' >> write_split.WriteSplit(
          artifact_utils.get_split_uri([examples], split),
          example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
    result = pipeline.run()
    result.wait_until_finish()

    counts = {s: _counter(result, f'{s}_examples') for s in SPLITS}
    empty = [s for s in SPLITS if counts[s] == 0]
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
    for split in SPLITS:
      examples.set_int_custom_property(f'{split}_examples', counts[split])
    joined = _counter(result, 'conversions_joined')
    examples.set_int_custom_property('conversions_joined', joined)
    logging.info('ConversionLogExampleGen: %d train and %d eval examples, %d '
                 'conversions reported by T', counts['train'], counts['eval'], joined)
