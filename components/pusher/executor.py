"""VersionedPusher executor: push the blessed model, or record that nothing was.

Built on TFX's Pusher executor for what it defines (the blessing check on
`model_blessing`, the model path, the `pushed` / `pushed_destination` /
`pushed_version` properties); the push itself is push.py's atomic, idempotent
versioned write, whose completion marker is the only commit point (on GCS a
rename is a copy and a delete, so the marker, not the rename, decides).
"""

import json
import os
from typing import Any, Dict, List

import tensorflow as tf
from absl import logging
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs

from components import artifacts
from components.promotion import executor as promotion
from components.pusher import push
from components.served_baseline import executor as served_baseline
from models import export
from models import fallback as fallback_lib
from observation import snapshot

MODEL_KEY = standard_component_specs.MODEL_KEY
# The final decision only: the Promotion step's blessing (the Evaluator's is
# recorded but not used for the push).
BLESSING_KEY = standard_component_specs.MODEL_BLESSING_KEY
EXAMPLES_KEY = 'examples'
PUSHED_KEY = standard_component_specs.PUSHED_MODEL_KEY
# Where the serving versions go (local or gs://).
PUSH_BASE_KEY = 'push_base'
PUSH_RESULT_FILE = 'push.json'


def _prop(artifact, name: str, default=None):
  """A custom property of a TFX Artifact (any type), or `default`."""
  value = artifact.get_custom_property(name)
  return default if value is None else value


def _promotion_fallback(blessing) -> Dict:
  """The band the Promotion step fitted around the baseline ({} when none: the
  bootstrap, fallback.rule off, or a blessing from elsewhere)."""
  path = os.path.join(blessing.uri, promotion.RESULT_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f).get('fallback') or {}


def _read(path: str) -> bytes:
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


class Executor(tfx_pusher_executor.Executor):
  """Pushes the quantized model (and its warm-start weights) by T."""

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
    base = exec_properties[PUSH_BASE_KEY]
    if not self.CheckBlessing(input_dict):
      logging.info('Pusher: the model is not blessed; nothing is pushed')
      self._MarkNotPushed(pushed)
      pushed.set_string_custom_property('reason', 'not blessed')
      return
    t = snapshot.parse_utc(_prop(examples, artifacts.SNAPSHOT_TIME))
    model_path = self.GetModelPath(input_dict)
    content = _read(os.path.join(model_path, 'tflite'))
    # The float student's weights travel with the served version, so the next
    # night's student warm-starts from what serving serves (ServedBaseline).
    extra = {}
    weights = export.warm_start_weights(model_path)
    if tf.io.gfile.exists(weights):
      extra[export.WARM_START_FILE] = _read(weights)
    metadata = {
        'model_uri': model.uri,
        'model_id': model.id,
        'baseline_model': _prop(blessing, 'baseline_model', None),
        'examples_uri': examples.uri,
        # The next night's promotion step compares it with its candidate's
        # (same recipe: a refresh; else a change, judged 2 of 3).
        push.RECIPE_FINGERPRINT: export.student_recipe_fingerprint(model.uri),
        # The band each prediction is checked against at serving and the version
        # it falls back to (the one it replaces), whose model travels in the
        # package: components.pusher.serving.predict_with_fallback(<version dir>, rows).
        fallback_lib.METADATA_BAND: None,
        fallback_lib.METADATA_FALLBACK_VERSION: None,
    }
    band = _promotion_fallback(blessing)
    baseline_uri = _prop(blessing, 'baseline_model', None)
    if band and baseline_uri:
      metadata[fallback_lib.METADATA_BAND] = {
          **band['band'], 'serving_helper': 'components.pusher.serving.predict_with_fallback'}
      metadata[fallback_lib.METADATA_FALLBACK_VERSION] = band['fallback_version']
      extra[fallback_lib.FALLBACK_MODEL_FILE] = _read(
          served_baseline.tflite_path(baseline_uri))
    result = push.push(base, t, content, metadata, extra_files=extra)
    newest = push.newest(base)
    result['backfill'] = bool(newest and push.version_t(newest) > t)
    logging.info('Pusher: %s (%s)%s', result['reason'], result['path'],
                 '; a backfill: serving keeps the newer ' + newest
                 if result['backfill'] else '')
    if result['pushed']:
      self._MarkPushed(pushed, result['path'], result['version'])
    else:
      self._MarkNotPushed(pushed)
      pushed.set_string_custom_property('pushed_destination', result['path'])
      pushed.set_string_custom_property('pushed_version', result['version'])
    pushed.set_string_custom_property('reason', result['reason'])
    pushed.set_int_custom_property('backfill', int(result['backfill']))
    with tf.io.gfile.GFile(os.path.join(pushed.uri, PUSH_RESULT_FILE), 'w') as f:
      json.dump(result, f, indent=1)
