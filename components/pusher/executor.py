"""VersionedPusher executor: push the blessed model, or record that nothing was."""

import json
import os
from typing import Any, Dict, List

from absl import logging
import tensorflow as tf
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components import artifacts
from components.pusher import push
from observation import snapshot

MODEL_KEY = 'model'
BLESSING_KEY = 'model_blessing'
EXAMPLES_KEY = 'examples'
PUSHED_KEY = 'pushed_model'
# Where the serving versions go (local or gs://).
PUSH_BASE_KEY = 'push_base'


def _prop(artifact, name: str, default=None):
  if name not in artifact.mlmd_artifact.custom_properties:
    return default
  value = artifact.mlmd_artifact.custom_properties[name]
  return getattr(value, value.WhichOneof('value'))


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    blessing = artifact_utils.get_single_instance(input_dict[BLESSING_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    pushed = artifact_utils.get_single_instance(output_dict[PUSHED_KEY])
    base = exec_properties[PUSH_BASE_KEY]
    if _prop(blessing, 'blessed', 0) != 1:
      logging.info('Pusher: the model is not blessed; nothing is pushed')
      pushed.set_int_custom_property('pushed', 0)
      pushed.set_string_custom_property('reason', 'not blessed')
      return
    t = snapshot.parse_utc(_prop(examples, artifacts.SNAPSHOT_TIME))
    with tf.io.gfile.GFile(os.path.join(path_utils.serving_model_path(model.uri),
                                        'tflite'), 'rb') as f:
      content = f.read()
    metadata = {
        'model_uri': model.uri,
        'model_id': model.id,
        'baseline_model': _prop(blessing, 'baseline_model', None),
        'examples_uri': examples.uri,
    }
    result = push.push(base, t, content, metadata)
    logging.info('Pusher: %s (%s)', result['reason'], result['path'])
    pushed.set_int_custom_property('pushed', int(result['pushed']))
    pushed.set_string_custom_property('pushed_destination', result['path'])
    pushed.set_string_custom_property('pushed_version', result['version'])
    pushed.set_string_custom_property('reason', result['reason'])
    with tf.io.gfile.GFile(os.path.join(pushed.uri, 'push.json'), 'w') as f:
      json.dump(result, f, indent=1)
