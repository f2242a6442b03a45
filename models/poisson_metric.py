"""PoissonLogLoss: a TFMA metric for the Evaluator gate (docs/architecture.md §7).

The exact Poisson NLL including log(y!), with the label and the prediction's scale
from `observation.eval_labels` (truth, or reported conversions on observable browsers,
or reported + modeled), so the Evaluator, the Quantizer's report and the benchmark
score models the same way; checked against `models.nll`.

Each computation emits four metrics (name = the configured `name`):
  <name>               mean NLL over the scored examples
  <name>_calibration   sum(scale * prediction) / sum(label)
  <name>_abs_log_bias  |log(calibration)|: the bias, symmetric in over and under
                       (so TFMA gives its candidate - baseline diff a CI)
  <name>_examples      number of scored examples

Used from an EvalConfig (the module is importable wherever the package is):
  tfma.MetricConfig(class_name=CLASS_NAME, module=MODULE,
                    config=config_json(spec, name))
"""

import dataclasses
import json
import math
from typing import Dict, Iterable, List, Optional, Sequence  # pylint: disable=unused-import

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

from observation import eval_labels

NAME = 'poisson_log_loss'
CLASS_NAME = 'PoissonLogLoss'
# Where TFMA imports the metric from (by name, on every worker).
MODULE = 'models.poisson_metric'


def config_json(spec: eval_labels.EvalLabelSpec, name: str = NAME, **extra) -> str:
  """The MetricConfig.config of a PoissonLogLoss: its keyword arguments."""
  return json.dumps({'name': name, 'label_mode': spec.mode,
                     'window_names': list(spec.window_names), 'panel': spec.panel,
                     'full_threshold': spec.full_threshold, **extra})


def feature_keys(label_mode: str, window_names: Sequence[str],
                 panel: str = '') -> List[str]:
  """The example columns a label mode reads."""
  return list(eval_labels.needed(label_mode, window_names, panel))


class LabelModeMetric(metric_types.Metric):
  """A TFMA metric scored against an eval label mode (eval_labels.MODES); its
  config (name, label_mode, the windows, the panel column, full_threshold and
  any `extra` of the subclass) is what TFMA serializes and hands to
  `computations` per model, output and sub-key."""

  def __init__(self, computations, name: str, label_mode: str,
               window_names: Sequence[str], panel: str, full_threshold: float,
               **extra):
    if label_mode not in eval_labels.MODES:
      raise ValueError(f'label_mode {label_mode!r} is not one of {eval_labels.MODES}')
    super().__init__(metric_util.merge_per_key_computations(computations),
                     name=name, label_mode=label_mode,
                     window_names=list(window_names), panel=panel,
                     full_threshold=full_threshold, **extra)


class PoissonLogLoss(LabelModeMetric):
  """Exact Poisson NLL of a count prediction against the configured eval label."""

  def __init__(self, name: str = NAME, label_mode: str = 'truth',
               window_names: Sequence[str] = (), panel: str = '',
               full_threshold: float = 0.95):
    super().__init__(_computations, name, label_mode, window_names, panel,
                     full_threshold)


metric_types.register_metric(PoissonLogLoss)


def _computations(name: str = NAME, label_mode: str = 'truth',
                  window_names: Sequence[str] = (), panel: str = '',
                  full_threshold: float = 0.95,
                  eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_name: str = '', output_name: str = '',
                  sub_key: Optional[metric_types.SubKey] = None,
                  aggregation_type=None, class_weights=None,
                  example_weighted: bool = False) -> metric_types.MetricComputations:
  del aggregation_type, class_weights
  keys = [metric_types.MetricKey(name=n, model_name=model_name,
                                 output_name=output_name, sub_key=sub_key,
                                 example_weighted=example_weighted)
          for n in (name, f'{name}_calibration', f'{name}_abs_log_bias',
                    f'{name}_examples')]
  return [metric_types.MetricComputation(
      keys=keys,
      preprocessors=[metric_types.FeaturePreprocessor(
          feature_keys=feature_keys(label_mode, window_names, panel))],
      combiner=_Combiner(keys, eval_config, eval_labels.EvalLabelSpec(
          label_mode, tuple(window_names), panel, full_threshold)))]


@dataclasses.dataclass
class _Accumulator:
  loss: float = 0.0
  prediction: float = 0.0
  label: float = 0.0
  examples: int = 0


class _Combiner(beam.CombineFn):
  """Sums NLL, scaled predictions and labels over one example at a time."""

  def __init__(self, keys, eval_config, spec: eval_labels.EvalLabelSpec):
    self._keys = keys
    self._eval_config = eval_config
    self._spec = spec
    self._mode = spec.mode
    self._columns = list(spec.columns())

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator()

  def _prediction(self, element) -> float:
    key = self._keys[0]
    predictions = element.get_predictions(key.model_name, key.output_name)
    if predictions is None:
      raise ValueError(f'no prediction for model {key.model_name!r}')
    return float(metric_util.safe_to_scalar(np.asarray(predictions)))

  def add_input(self, acc: _Accumulator, element) -> _Accumulator:
    features = element.features or {}
    missing = [c for c in self._columns if c not in features]
    if missing:
      raise ValueError(f'PoissonLogLoss ({self._mode}) needs columns {missing}')
    rows = {c: np.asarray(features[c], dtype=np.float64).reshape(-1)[:1]
            for c in self._columns}
    label, scale, keep = self._spec.label_and_scale(rows)
    if not keep[0]:
      return acc
    y = float(label[0])
    mu = float(scale[0]) * self._prediction(element)
    if mu < 0 or not math.isfinite(mu):
      raise ValueError(f'prediction {mu} is not a non-negative count')
    if mu == 0:
      loss = 0.0 if y == 0 else math.inf
    else:
      loss = mu - y * math.log(mu) + math.lgamma(y + 1.0)
    acc.loss += loss
    acc.prediction += mu
    acc.label += y
    acc.examples += 1
    return acc

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
    # A fresh accumulator: jackknife intervals re-merge the same inputs.
    out = _Accumulator()
    for acc in accumulators:
      out.loss += acc.loss
      out.prediction += acc.prediction
      out.label += acc.label
      out.examples += acc.examples
    return out

  def extract_output(self, acc: _Accumulator) -> Dict[metric_types.MetricKey, float]:
    nll_key, calibration_key, bias_key, count_key = self._keys
    calibration = acc.prediction / acc.label if acc.label else float('nan')
    return {
        nll_key: acc.loss / acc.examples if acc.examples else float('nan'),
        calibration_key: calibration,
        bias_key: (abs(math.log(calibration)) if calibration > 0
                   else float('inf') if calibration == 0 else float('nan')),
        count_key: float(acc.examples),
    }
