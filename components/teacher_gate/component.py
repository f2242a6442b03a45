"""TeacherGate component: passes the teacher to the BulkInferrer, or stops the run."""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.artifacts import GateResult
from components.teacher_gate import executor


class TeacherGateSpec(ComponentSpec):
  PARAMETERS = {
      # config.TeacherGateConfig JSON: mode, min_gap_closed, min_improvement.
      executor.BAR_KEY: ExecutionParameter(type=str),
      # The dataset's delay windows (JSON list) and panel column ('' : none).
      executor.WINDOWS_KEY: ExecutionParameter(type=str),
      executor.PANEL_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {executor.RESULT_KEY: ChannelParameter(type=GateResult)}


class TeacherGate(base_component.BaseComponent):
  """Scores the teacher on the eval split; fails the run when below the bar.

  Output `result` (GateResult, not a ModelBlessing: no resolver of models can take
  it for a blessing) carries the metrics, the teacher's lag cutoff and the number
  of examples it trained on. Make it an upstream node of the BulkInferrer.
  """
  SPEC_CLASS = TeacherGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, bar: str,
               window_names: str, panel: str = ''):
    super().__init__(spec=TeacherGateSpec(
        model=model, examples=examples, bar=bar, window_names=window_names,
        panel=panel,
        result=types.Channel(type=GateResult)))
