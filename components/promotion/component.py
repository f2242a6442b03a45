"""Promotion component: the paper's promotion decision after the Evaluator."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.promotion import executor


class PromotionSpec(ComponentSpec):
  PARAMETERS = {
      # config.PromotionConfig JSON: rule, slice_guard, latency_samples, ...
      executor.CONFIG_KEY: ExecutionParameter(type=str),
      executor.MAX_NLL_KEY: ExecutionParameter(type=float),
      # config.Config.fallback_parameter(): the band and the failed-fraction cap.
      executor.FALLBACK_KEY: ExecutionParameter(type=str, optional=True),
      # EvalLabelSpec JSON: the gating label mode the paired comparisons score.
      executor.EVAL_LABEL_KEY: ExecutionParameter(type=str, optional=True),
      # The dataset's tCPA column ('' : none; the spend proxy weighs clicks 1).
      executor.TCPA_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      executor.EVALUATION_KEY: ChannelParameter(
          type=standard_artifacts.ModelEvaluation),
      executor.EVALUATOR_BLESSING_KEY: ChannelParameter(
          type=standard_artifacts.ModelBlessing),
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      # None only for the bootstrap (nothing served yet).
      executor.BASELINE_KEY: ChannelParameter(type=standard_artifacts.Model,
                                              optional=True),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {executor.BLESSING_KEY: ChannelParameter(
      type=standard_artifacts.ModelBlessing)}


class Promotion(base_component.BaseComponent):
  """Judges the three areas (loss and bias, business, latency) and applies the
  configured rule; its `blessing` is the one the Pusher follows.

  Inputs: the Evaluator's `evaluation` and `blessing` (as `evaluator_blessing`),
  the candidate `model` and the `baseline_model` (both TFLite), and the
  `examples` whose eval split both models score: the paired loss, bias and spend
  comparisons, the fallback band and the latency comparison run on it.
  """
  SPEC_CLASS = PromotionSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, evaluation: types.BaseChannel,
               evaluator_blessing: types.BaseChannel, model: types.BaseChannel,
               examples: types.BaseChannel, config: str, max_nll: float,
               baseline_model: Optional[types.BaseChannel] = None,
               fallback: Optional[str] = None, eval_label: str = '',
               tcpa: str = ''):
    super().__init__(spec=PromotionSpec(
        evaluation=evaluation, evaluator_blessing=evaluator_blessing, model=model,
        baseline_model=baseline_model, examples=examples, config=config,
        max_nll=max_nll, fallback=fallback, eval_label=eval_label, tcpa=tcpa,
        blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
