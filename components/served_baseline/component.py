"""ServedBaseline component: the baseline the Evaluator gates against is the model
production serves, read from the serving directory.

LatestBlessedModelResolver cannot be trusted with that: on Vertex it compiles into
a type-only query over every ModelBlessing, and locally it orders by artifact id,
so a blessed backfill (a rerun of an older T) would become the baseline of the
nights after it. The serving directory is what production serves, so the baseline
is its newest complete version as of the eval split's start.
"""

from typing import Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.artifacts import GateResult
from components.served_baseline import executor


Flag = Union[bool, int, data_types.RuntimeParameter]


def _int(flag: Flag):
  # An int RuntimeParameter (Vertex) is resolved at run time; the spec takes ints.
  return flag if isinstance(flag, data_types.RuntimeParameter) else int(flag)


class ServedBaselineSpec(ComponentSpec):
  PARAMETERS = {
      executor.SERVING_DIR_KEY: ExecutionParameter(type=str),
      executor.BOOTSTRAP_KEY: ExecutionParameter(type=int),
      executor.FORCE_KEY: ExecutionParameter(type=int),
  }
  INPUTS = {executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}
  OUTPUTS = {
      executor.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.RESULT_KEY: ChannelParameter(type=GateResult),
  }


class ServedBaseline(base_component.BaseComponent):
  """The served model as of the eval start as the baseline; fails a non-bootstrap
  run that has none, and records a night whose T is already served."""
  SPEC_CLASS = ServedBaselineSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, serving_dir: str, bootstrap: Flag,
               force: Flag = False):
    super().__init__(spec=ServedBaselineSpec(
        examples=examples, serving_dir=serving_dir, bootstrap=_int(bootstrap),
        force=_int(force), baseline=types.Channel(type=standard_artifacts.Model),
        result=types.Channel(type=GateResult)))
