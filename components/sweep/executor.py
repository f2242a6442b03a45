"""SweepRecord and SweepLookup executors: the sweeps directory as the registry.

Like the serving directory for the baseline (components/served_baseline), a
directory is the one record every runner shares: on Vertex the executors cannot
query the pipeline's ML Metadata, and the local store orders by id, not by what
a run was for. A sweep run writes `<sweeps_dir>/<fingerprint>/<UTC time>.json`;
a nightly run reads the newest file under its own fingerprint, or falls back to
the config's values. Both outputs also carry the fingerprint and source as
custom properties, so ML Metadata shows which sweep a night used.
"""

import datetime
import json
import os
from typing import Any, Dict, List, Optional

from absl import logging
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from models import hparams

# Keys (the component specs and the tests use these).
BEST_HYPERPARAMETERS_KEY = 'best_hyperparameters'
RECORD_KEY = 'record'
HYPERPARAMETERS_KEY = 'hyperparameters'
SWEEPS_DIR_KEY = 'sweeps_dir'
FINGERPRINT_KEY = 'fingerprint'
# The file name TFX's Tuner writes and the Trainer reads (its only file).
HP_FILE = 'best_hyperparameters.txt'
# Custom properties.
SOURCE = 'source'
RECORD_PATH = 'record_path'


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S%fZ')


def record_dir(sweeps_dir: str, fingerprint: str) -> str:
  return os.path.join(sweeps_dir, fingerprint)


def write_record(sweeps_dir: str, fingerprint: str, values: Dict[str, Any],
                 extra: Optional[Dict] = None, stamp: Optional[str] = None) -> str:
  """Writes a sweep's best values under its fingerprint; returns the path."""
  stamp = stamp or _now()
  path = os.path.join(record_dir(sweeps_dir, fingerprint), f'{stamp}.json')
  tf.io.gfile.makedirs(os.path.dirname(path))
  body = {'fingerprint': fingerprint, 'values': values, 'recorded': stamp,
          **(extra or {})}
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(body, sort_keys=True))
  return path


def latest_record(sweeps_dir: str, fingerprint: str) -> Optional[Dict]:
  """The newest record for `fingerprint` (with its 'path'), or None."""
  directory = record_dir(sweeps_dir, fingerprint)
  if not tf.io.gfile.isdir(directory):
    return None
  names = sorted(n for n in tf.io.gfile.listdir(directory) if n.endswith('.json'))
  if not names:
    return None
  path = os.path.join(directory, names[-1])
  with tf.io.gfile.GFile(path) as f:
    record = json.load(f)
  if record.get('fingerprint') != fingerprint:
    raise ValueError(f'{path}: recorded for fingerprint {record.get("fingerprint")}'
                     f', found under {fingerprint}')
  return {**record, 'path': path}


def read_hp_file(artifact) -> Dict:
  path = io_utils.get_only_uri_in_dir(artifact.uri)
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


class RecordExecutor(base_executor.BaseExecutor):
  """Writes the Tuner's best hyperparameters to the sweeps directory."""

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    best = artifact_utils.get_single_instance(input_dict[BEST_HYPERPARAMETERS_KEY])
    values = hparams.values_of(read_hp_file(best))
    fingerprint = exec_properties[FINGERPRINT_KEY]
    path = write_record(exec_properties[SWEEPS_DIR_KEY], fingerprint, values,
                        {'tuner_output': best.uri})
    record = artifact_utils.get_single_instance(output_dict[RECORD_KEY])
    record.set_string_custom_property(FINGERPRINT_KEY, fingerprint)
    record.set_string_custom_property(RECORD_PATH, path)
    record.set_string_custom_property('values', json.dumps(values, sort_keys=True))
    logging.info('SweepRecord: %s -> %s', values, path)


class LookupExecutor(base_executor.BaseExecutor):
  """The newest sweep's values for this fingerprint, or none (the config's)."""

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    del input_dict
    fingerprint = exec_properties[FINGERPRINT_KEY]
    record = latest_record(exec_properties[SWEEPS_DIR_KEY], fingerprint)
    out = artifact_utils.get_single_instance(output_dict[HYPERPARAMETERS_KEY])
    if record is None:
      values: Dict = {}
      provenance = {'source': hparams.SOURCE_CONFIG, 'fingerprint': fingerprint,
                    'reason': f'no sweep recorded for fingerprint {fingerprint}'}
    else:
      values = record['values']
      provenance = {'source': hparams.SOURCE_SWEEP, 'fingerprint': fingerprint,
                    'record': record['path']}
    io_utils.write_string_file(os.path.join(out.uri, HP_FILE), json.dumps(
        hparams.as_hp_config(values, provenance), sort_keys=True))
    out.set_string_custom_property(SOURCE, provenance['source'])
    out.set_string_custom_property(FINGERPRINT_KEY, fingerprint)
    out.set_string_custom_property(RECORD_PATH, provenance.get('record', ''))
    logging.info('SweepLookup: %s %s', provenance, values)
