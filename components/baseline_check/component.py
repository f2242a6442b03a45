"""BaselineCheck component: fails a non-bootstrap run that has no baseline."""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.artifacts import GateResult
from components.baseline_check import executor


class BaselineCheckSpec(ComponentSpec):
  PARAMETERS = {executor.BOOTSTRAP_KEY: ExecutionParameter(type=int)}
  INPUTS = {executor.BASELINE_KEY: ChannelParameter(
      type=standard_artifacts.Model, optional=True)}
  OUTPUTS = {executor.RESULT_KEY: ChannelParameter(type=GateResult)}


class BaselineCheck(base_component.BaseComponent):
  """Stops a distilled run that resolved no blessed baseline."""
  SPEC_CLASS = BaselineCheckSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, baseline: types.BaseChannel, bootstrap: bool):
    super().__init__(spec=BaselineCheckSpec(
        baseline=baseline, bootstrap=int(bootstrap),
        result=types.Channel(type=GateResult)))
