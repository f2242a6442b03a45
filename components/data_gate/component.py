"""DataGate component: made an upstream of Transform, so anomalies stop the run.

ExampleValidator only records anomalies; nothing downstream reads them. This gate
fails its execution, naming every anomaly, so Transform and the trainers never run.
"""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec

from components.artifacts import GateResult
from components.data_gate import executor


class DataGateSpec(ComponentSpec):
  PARAMETERS = {}
  INPUTS = {
      executor.ANOMALIES_KEY: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }
  OUTPUTS = {executor.RESULT_KEY: ChannelParameter(type=GateResult)}


class DataGate(base_component.BaseComponent):
  """Fails when the ExampleValidator's anomalies are not empty."""
  SPEC_CLASS = DataGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, anomalies: types.BaseChannel):
    super().__init__(spec=DataGateSpec(anomalies=anomalies,
                                       result=types.Channel(type=GateResult)))
