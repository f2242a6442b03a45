"""ServedBaseline executor: the baseline is what the serving directory served.

The baseline is the newest complete version under `serving_dir` whose T is at or
before the eval split's start, so the candidate is compared with the model that
was live while the eval examples happened; a later version (a backfill run for an
older T) is never taken. Its model.tflite goes where TFMA's TFLite loader and the
Pusher look, and its warm-start weights (if pushed) where the student reads them.
"""

import datetime
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import artifacts
from components.pusher import push
from models import export
from observation import snapshot

EXAMPLES_KEY = 'examples'
BASELINE_KEY = 'baseline'
RESULT_KEY = 'result'
# Where the serving versions are (local or gs://).
SERVING_DIR_KEY = 'serving_dir'
# 1 for the explicit bootstrap run (no baseline needed).
BOOTSTRAP_KEY = 'bootstrap'
# 1 to rerun a night whose T already has a served version.
FORCE_KEY = 'force'
# TFMA's model_type=tf_lite loader and the Pusher read this file name.
TFLITE_FILE = 'tflite'
# Result properties other nodes read: the pipeline's Cond skips the rest of the
# DAG on ALREADY_SERVED; the run summary reports the others.
ALREADY_SERVED = 'already_served'
BASELINE_VERSION = 'baseline_version'
BACKFILL = 'backfill'
NEWEST_VERSION = 'newest_version'


# The baseline artifact's property: the served student's recipe fingerprint.
RECIPE_FINGERPRINT = push.RECIPE_FINGERPRINT


class BaselineMissingError(RuntimeError):
  pass


def tflite_path(model_uri: str) -> str:
  """Where a Model artifact keeps its TFLite model (`Format-Serving/tflite`)."""
  return os.path.join(path_utils.serving_model_path(model_uri), TFLITE_FILE)


def warm_start_path(model_uri: str) -> str:
  """Where export.warm_start_weights(<uri>/Format-Serving) looks."""
  return export.warm_start_weights(path_utils.serving_model_path(model_uri))


def _time(examples, name: str) -> datetime.datetime:
  text = examples.get_string_custom_property(name)
  if not text:
    raise ValueError(f'the examples artifact {examples.uri} has no {name!r} '
                     'property (set by the ConversionLogExampleGen)')
  return snapshot.parse_utc(text)


def _copy(src: str, dst: str) -> None:
  tf.io.gfile.makedirs(os.path.dirname(dst))
  tf.io.gfile.copy(src, dst, overwrite=True)


def missing_message(serving_dir: str, eval_start: datetime.datetime) -> str:
  """Why a non-bootstrap run stops, and how to bootstrap."""
  versions = push.complete_versions(serving_dir)
  if versions:
    oldest = push.version_t(versions[0]).isoformat()
    found = (f'the oldest complete version is T={oldest} ({versions[0]}), newer '
             'than this run\'s eval start')
  else:
    found = 'no complete version'
  return (f'no served baseline in {serving_dir} as of the eval start '
          f'{eval_start.isoformat()}: {found}; bootstrap first (make bootstrap, or '
          'python -m pipeline.cli run --bootstrap) to push the production recipe '
          'through the same quantize / evaluate / push path; without a baseline '
          'the Evaluator would bless any model')


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    serving_dir = exec_properties[SERVING_DIR_KEY]
    bootstrap = int(bool(exec_properties.get(BOOTSTRAP_KEY)))
    force = bool(exec_properties.get(FORCE_KEY))
    t = _time(examples, artifacts.SNAPSHOT_TIME)
    eval_start = _time(examples, artifacts.EVAL_START)

    already = push.version_at(serving_dir, t)
    skip = bool(already) and not force
    version = push.served_as_of(serving_dir, eval_start)
    newest = push.newest(serving_dir)
    backfill = newest is not None and push.version_t(newest) > t
    if version is None and not bootstrap and not skip:
      raise BaselineMissingError(missing_message(serving_dir, eval_start))

    if version:
      baseline = artifact_utils.get_single_instance(output_dict[BASELINE_KEY])
      src = push.version_path(serving_dir, version)
      _copy(os.path.join(src, push.MODEL_FILE), tflite_path(baseline.uri))
      warm = os.path.join(src, export.WARM_START_FILE)
      # Versions pushed before warm starts existed have none.
      has_warm = tf.io.gfile.exists(warm)
      if has_warm:
        _copy(warm, warm_start_path(baseline.uri))
      baseline.set_string_custom_property('served_version', version)
      # The served student's recipe fingerprint ('' for versions pushed before
      # the Pusher recorded it): the promotion step's rule `auto` reads it.
      baseline.set_string_custom_property(
          RECIPE_FINGERPRINT, push.read_metadata(src).get(push.RECIPE_FINGERPRINT, ''))
      baseline.set_string_custom_property('served_path', src)
      baseline.set_string_custom_property(
          'snapshot_time', push.version_t(version).isoformat())
      result.set_string_custom_property('baseline_model', baseline.uri)
      reason = (f'baseline {version} (served as of the eval start '
                f'{eval_start.isoformat()})')
      if backfill:
        reason += f', a backfill: {newest} is newer'
    else:
      # The bootstrap is pushed as the first version: nothing to compare with.
      # An empty list: the launcher publishes no baseline artifact (local runs
      # only; a Vertex run is never the bootstrap, so its output always exists).
      output_dict[BASELINE_KEY].clear()
      has_warm = False
      reason = 'bootstrap: no served version yet'
    if skip:
      # Still the baseline above (downstream tasks resolve their inputs before
      # their trigger condition skips them); nothing after this node runs.
      reason = (f'T {t.isoformat()} is already served as {already}; the rest of '
                'the DAG is skipped; pass --force to rerun')
      result.set_string_custom_property('served_version', already)
    logging.info('ServedBaseline: %s%s', reason,
                 '; warm-start weights copied' if has_warm else '')
    result.set_string_custom_property(BASELINE_VERSION, version or '')
    result.set_int_custom_property(BACKFILL, int(backfill))
    result.set_string_custom_property(NEWEST_VERSION, newest or '')
    result.set_int_custom_property(ALREADY_SERVED, int(skip))
    result.set_int_custom_property('bootstrap', bootstrap)
    result.set_int_custom_property('passed', 1)
    result.set_string_custom_property('reason', reason)
