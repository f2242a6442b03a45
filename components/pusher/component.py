"""VersionedPusher: the stock Pusher names versions by wall time and copies in
place (neither atomic nor idempotent); this one versions by T and fingerprint,
writes under a temporary name and marks completion last (push.py)."""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.pusher import executor


class VersionedPusherSpec(ComponentSpec):
  PARAMETERS = {executor.PUSH_BASE_KEY: ExecutionParameter(type=str)}
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {executor.PUSHED_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}


class VersionedPusher(base_component.BaseComponent):
  """Pushes a blessed quantized model to `push_base` (local or gs://)."""
  SPEC_CLASS = VersionedPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               examples: types.BaseChannel, push_base: str):
    super().__init__(spec=VersionedPusherSpec(
        model=model, model_blessing=model_blessing, examples=examples,
        push_base=push_base,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
