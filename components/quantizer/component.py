"""Quantizer component: the student's raw-feature signature -> TFLite."""

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter
from tfx.types.component_spec import ComponentSpec
from tfx.types.component_spec import ExecutionParameter

from components.artifacts import QuantizationReport
from components.quantizer import executor


class QuantizerSpec(ComponentSpec):
  PARAMETERS = {
      executor.MODE_KEY: ExecutionParameter(type=str),  # int8 | dynamic_range | float16
      executor.CALIBRATION_EXAMPLES_KEY: ExecutionParameter(type=int),
      # uniform | tcpa_stratified
      executor.CALIBRATION_SAMPLING_KEY: ExecutionParameter(type=str),
      # Largest relative NLL increase of quantized over float on eval.
      executor.MAX_NLL_INCREASE_KEY: ExecutionParameter(type=float),
      executor.LATENCY_SAMPLES_KEY: ExecutionParameter(type=int),
      # EvalLabelSpec JSON: {mode, window_names, panel, full_threshold}
      # (observation/eval_labels.py).
      executor.EVAL_LABEL_KEY: ExecutionParameter(type=str),
      executor.SEED_KEY: ExecutionParameter(type=int),
      # JSON list of the dataset's serving features: the TFLite model's inputs
      # must be exactly these (empty: the student's raw signature's).
      executor.SERVING_FEATURES_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      executor.QUANTIZED_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.REPORT_KEY: ChannelParameter(type=QuantizationReport),
  }


class Quantizer(base_component.BaseComponent):
  """Quantizes the student; fails when quantization costs more NLL than the bound.

  Inputs: `model` (the student, with its raw_features signature) and `examples`
  (train split: calibration; eval split: the report). Outputs:
  `quantized_model` (Format-Serving/tflite plus the float student) and `report`.
  """
  SPEC_CLASS = QuantizerSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel,
               mode: str = 'int8', calibration_examples: int = 1000,
               calibration_sampling: str = 'tcpa_stratified',
               max_nll_increase: float = 0.005, latency_samples: int = 2000,
               eval_label: str = '{}', seed: int = 0, serving_features: str = ''):
    super().__init__(spec=QuantizerSpec(
        model=model, examples=examples, mode=mode,
        calibration_examples=calibration_examples,
        calibration_sampling=calibration_sampling,
        max_nll_increase=max_nll_increase, latency_samples=latency_samples,
        eval_label=eval_label, seed=seed, serving_features=serving_features,
        quantized_model=types.Channel(type=standard_artifacts.Model),
        report=types.Channel(type=QuantizationReport)))
