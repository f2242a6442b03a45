"""DataGate executor: reads ExampleValidator's anomalies, fails if there are any."""

import os
from typing import Any, Dict, List

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.data_gate import gate

ANOMALIES_KEY = 'anomalies'
RESULT_KEY = 'result'
# ExampleValidator's per-split file (tfx/components/example_validator/executor.py).
ANOMALIES_FILE = 'SchemaDiff.pb'


def load_anomalies(artifact) -> Dict[str, anomalies_pb2.Anomalies]:
  out = {}
  for split in artifact_utils.decode_split_names(artifact.split_names):
    path = os.path.join(artifact_utils.get_split_uri([artifact], split), ANOMALIES_FILE)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(path))
    out[split] = anomalies
  return out


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    del exec_properties
    anomalies = artifact_utils.get_single_instance(input_dict[ANOMALIES_KEY])
    by_split = load_anomalies(anomalies)
    gate.check(by_split)  # raises, naming the anomalies
    result = artifact_utils.get_single_instance(output_dict[RESULT_KEY])
    result.set_int_custom_property('passed', 1)
    result.set_string_custom_property('splits', ','.join(sorted(by_split)))
    logging.info('DataGate: no anomalies in splits %s', sorted(by_split))
