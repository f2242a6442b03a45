"""SweepRecord (sweep runs) and SweepLookup (nightly runs) components."""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.artifacts import SweepResult
from components.sweep import executor


class SweepRecordSpec(ComponentSpec):
  PARAMETERS = {
      executor.SWEEPS_DIR_KEY: ExecutionParameter(type=str),
      executor.FINGERPRINT_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {executor.BEST_HYPERPARAMETERS_KEY: ChannelParameter(
      type=standard_artifacts.HyperParameters)}
  OUTPUTS = {executor.RECORD_KEY: ChannelParameter(type=SweepResult)}


class SweepRecord(base_component.BaseComponent):
  """Records the Tuner's best hyperparameters under the config's fingerprint."""
  SPEC_CLASS = SweepRecordSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.RecordExecutor)

  def __init__(self, best_hyperparameters: types.BaseChannel, sweeps_dir: str,
               fingerprint: str):
    super().__init__(spec=SweepRecordSpec(
        best_hyperparameters=best_hyperparameters, sweeps_dir=sweeps_dir,
        fingerprint=fingerprint, record=types.Channel(type=SweepResult)))


class SweepLookupSpec(ComponentSpec):
  PARAMETERS = {
      executor.SWEEPS_DIR_KEY: ExecutionParameter(type=str),
      executor.FINGERPRINT_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {}
  OUTPUTS = {executor.HYPERPARAMETERS_KEY: ChannelParameter(
      type=standard_artifacts.HyperParameters)}


class SweepLookup(base_component.BaseComponent):
  """The newest recorded sweep's values for this fingerprint (else none: the
  student trains with the config's), as the student Trainer's hyperparameters."""
  SPEC_CLASS = SweepLookupSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.LookupExecutor)

  def __init__(self, sweeps_dir: str, fingerprint: str):
    super().__init__(spec=SweepLookupSpec(
        sweeps_dir=sweeps_dir, fingerprint=fingerprint,
        hyperparameters=types.Channel(type=standard_artifacts.HyperParameters)))
