"""ConversionLogExampleGen component (a BaseBeamComponent, not FileBasedExampleGen).

FileBasedExampleGen would bring Vertex's span driver and one-span-per-run input
semantics; the window [T - W, T) spans W day partitions of two logs, so this
component lists and joins them itself (docs/architecture.md §2).
"""

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components import artifacts
from components.example_gen import executor


class ConversionLogExampleGenSpec(ComponentSpec):
  """Parameters: where the logs are, the window, T, and the label model."""
  PARAMETERS = {
      executor.DATA_ROOT_KEY: ExecutionParameter(type=str),
      executor.WINDOW_DAYS_KEY: ExecutionParameter(type=int),
      executor.EVAL_DAYS_KEY: ExecutionParameter(type=int),
      # ISO 8601 T; empty: resolved at run time by `snapshot_policy`.
      executor.SNAPSHOT_TIME_KEY: ExecutionParameter(type=str, optional=True),
      executor.SNAPSHOT_POLICY_KEY: ExecutionParameter(type=str),
      # The dataset spec's JSON: the logs' format, location and columns.
      executor.DATASET_KEY: ExecutionParameter(type=str),
      # LabelSpec JSON: the windows, the delay prior and how to fit it, the
      # observability priors, the columns with a meaning.
      executor.LABEL_SPEC_KEY: ExecutionParameter(type=str),
      # config.ExampleGenConfig: the cap on conversions per click and the share
      # of capped clicks that fails the run.
      executor.MAX_CONVERSIONS_PER_CLICK_KEY: ExecutionParameter(type=int,
                                                                 optional=True),
      executor.MAX_CAPPED_FRACTION_KEY: ExecutionParameter(type=float, optional=True),
      # config.SweepConfig.tune_fraction: > 0 adds the tune split.
      executor.TUNE_FRACTION_KEY: ExecutionParameter(type=float, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      executor.DELAY_MODEL_KEY: ChannelParameter(type=artifacts.DelayModel),
  }


class ConversionLogExampleGen(base_beam_component.BaseBeamComponent):
  """Joins the click log with conversions reported by T; splits by time.

  Output `examples`: splits `train` ([T - W, T - E)) and `eval` ([T - E, T)), and
  `tune` (a hashed `tune_fraction` of the train window's clicks) when asked, with
  custom properties `snapshot_time`, `snapshot_ts`, `window_start`, `eval_start`,
  per-split example counts, `conversions_joined`, `conversion_duplicates_dropped`,
  `clicks_capped`, `conversions_over_cap_dropped` and `delay_source`. Output
  `delay_model`: the delay distribution its exposures used (fitted on the
  window's reported conversions, or the dataset's prior), with per-window shares
  and scales as custom properties.
  """
  SPEC_CLASS = ConversionLogExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, data_root: str, window_days: int, eval_days: int,
               dataset: str, label_spec: str, snapshot_policy: str = 'data_end',
               snapshot_time: Optional[Union[str, data_types.RuntimeParameter]] = None,
               max_conversions_per_click: int = executor.DEFAULT_MAX_CONVERSIONS,
               max_capped_fraction: float = executor.DEFAULT_MAX_CAPPED_FRACTION,
               tune_fraction: float = 0.0):
    """Constructs the component.

    Args:
      data_root: where the dataset's file logs are (local or gs://; the spec's
        partition patterns are relative to it).
      window_days: W.
      eval_days: E, the eval split's length in days.
      dataset: the dataset spec's JSON (config.Config.dataset).
      label_spec: `observation.labels.LabelSpec.to_json()` (built by
        `config.Config.label_spec()`).
      snapshot_policy: how to resolve T when `snapshot_time` is empty.
      snapshot_time: T (ISO 8601), a RuntimeParameter, or None.
      max_conversions_per_click: a click with more keeps the earliest this many.
      max_capped_fraction: more capped clicks than this share fails the run.
      tune_fraction: the share of train-window clicks held out as `tune`.
    """
    super().__init__(spec=ConversionLogExampleGenSpec(
        data_root=data_root, window_days=window_days, eval_days=eval_days,
        dataset=dataset, label_spec=label_spec, snapshot_policy=snapshot_policy,
        snapshot_time=snapshot_time or '',
        max_conversions_per_click=max_conversions_per_click,
        max_capped_fraction=max_capped_fraction,
        tune_fraction=float(tune_fraction),
        examples=types.Channel(type=standard_artifacts.Examples),
        delay_model=types.Channel(type=artifacts.DelayModel)))
