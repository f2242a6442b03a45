"""SpendProxy: the business area's offline spend proxy as a TFMA metric (§7).

A bidder bids tCPA * pConvs per click, so over a slice the spend the model's bids
imply is sum(tCPA * pConvs) and the spend the advertisers want, sum(tCPA *
conversions). Their ratio is the model's tCPA-weighted calibration: what the
paper's business metric (spend vs desired spend) measures offline. TFMA has no
weighted-sum ratio metric, so this is hand-written like PoissonLogLoss, in the
same label modes (observation/eval_labels.py): truth (synthetic data) sums
tCPA * true_conversions; on real logs observed_observable compares the scaled
prediction with the reported conversions of fully observed browsers, and
observed_modeled adds the teacher's modeled conversions on every browser.

Each computation emits (name = the configured `name`, default `spend`):
  <name>            sum(tCPA * scale * pConvs) over the scored examples
  <name>_desired    sum(tCPA * label)
  <name>_ratio      <name> / <name>_desired
  <name>_log_error  |log(<name>_ratio)|: lower is better, over or under

As a TFMA metric it is computed per slice (tCPA buckets: the key slice is
tcpa_gt_250), for the candidate, the baseline and their diff, with TFMA's
confidence intervals.
"""

import dataclasses
import math
from typing import Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util
from tensorflow_model_analysis.proto import config_pb2

from models import poisson_metric
from observation import eval_labels

NAME = 'spend'
CLASS_NAME = 'SpendProxy'
MODULE = 'models.spend_metric'
SUFFIXES = ('', '_desired', '_ratio', '_log_error')


def config_json(spec: eval_labels.EvalLabelSpec, tcpa: str,
                name: str = NAME) -> str:
  """The MetricConfig.config of a SpendProxy: a PoissonLogLoss's keyword
  arguments and the tCPA column ('' : none, every click weighs 1, and the
  proxy is the scored clicks' overall calibration)."""
  return poisson_metric.config_json(spec, name, tcpa=tcpa)


def reference(tcpa: np.ndarray, pconvs: np.ndarray, label: np.ndarray,
              scale: np.ndarray, keep: np.ndarray) -> Dict[str, float]:
  """The same four figures in numpy (tests compare the metric with it)."""
  spend = float(np.sum((tcpa * scale * pconvs)[keep]))
  desired = float(np.sum((tcpa * label)[keep]))
  ratio = spend / desired if desired else float('nan')
  return {NAME: spend, NAME + '_desired': desired, NAME + '_ratio': ratio,
          NAME + '_log_error': abs(math.log(ratio)) if ratio > 0 else float('nan')}


class SpendProxy(poisson_metric.LabelModeMetric):
  """Implied spend vs desired spend of a count prediction, per slice."""

  def __init__(self, name: str = NAME, label_mode: str = 'truth',
               window_names: Sequence[str] = (), panel: str = '',
               full_threshold: float = 0.95, tcpa: str = ''):
    super().__init__(_computations, name, label_mode, window_names, panel,
                     full_threshold, tcpa=tcpa)


metric_types.register_metric(SpendProxy)


def _computations(name: str = NAME, label_mode: str = 'truth',
                  window_names: Sequence[str] = (), panel: str = '',
                  full_threshold: float = 0.95, tcpa: str = '',
                  eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_name: str = '', output_name: str = '',
                  sub_key: Optional[metric_types.SubKey] = None,
                  aggregation_type=None, class_weights=None,
                  example_weighted: bool = False) -> metric_types.MetricComputations:
  del aggregation_type, class_weights, eval_config
  keys = [metric_types.MetricKey(name=name + s, model_name=model_name,
                                 output_name=output_name, sub_key=sub_key,
                                 example_weighted=example_weighted)
          for s in SUFFIXES]
  spec = eval_labels.EvalLabelSpec(label_mode, tuple(window_names), panel,
                                   full_threshold)
  cols = list(spec.columns()) + ([tcpa] if tcpa else [])
  return [metric_types.MetricComputation(
      keys=keys,
      preprocessors=[metric_types.FeaturePreprocessor(feature_keys=cols)],
      combiner=_Combiner(keys, spec, tcpa, cols))]


@dataclasses.dataclass
class _Accumulator:
  spend: float = 0.0
  desired: float = 0.0


class _Combiner(beam.CombineFn):
  """Sums tCPA * scaled prediction and tCPA * label, one example at a time."""

  def __init__(self, keys, spec: eval_labels.EvalLabelSpec, tcpa: str,
               cols: List[str]):
    self._keys = keys
    self._spec = spec
    self._mode = spec.mode
    self._tcpa = tcpa
    self._columns = cols

  def create_accumulator(self) -> _Accumulator:
    return _Accumulator()

  def add_input(self, acc: _Accumulator, element) -> _Accumulator:
    features = element.features or {}
    missing = [c for c in self._columns if c not in features]
    if missing:
      raise ValueError(f'SpendProxy ({self._mode}) needs columns {missing}')
    rows = {c: np.asarray(features[c], dtype=np.float64).reshape(-1)[:1]
            for c in self._columns}
    label, scale, keep = self._spec.label_and_scale(rows)
    if not keep[0]:
      return acc
    key = self._keys[0]
    predictions = element.get_predictions(key.model_name, key.output_name)
    if predictions is None:
      raise ValueError(f'no prediction for model {key.model_name!r}')
    pconvs = float(metric_util.safe_to_scalar(np.asarray(predictions)))
    tcpa = float(rows[self._tcpa][0]) if self._tcpa else 1.0
    acc.spend += tcpa * float(scale[0]) * pconvs
    acc.desired += tcpa * float(label[0])
    return acc

  def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
    # A fresh accumulator: jackknife intervals re-merge the same inputs.
    out = _Accumulator()
    for acc in accumulators:
      out.spend += acc.spend
      out.desired += acc.desired
    return out

  def extract_output(self, acc: _Accumulator) -> Dict[metric_types.MetricKey, float]:
    spend, desired, ratio, log_error = self._keys
    r = acc.spend / acc.desired if acc.desired else float('nan')
    return {spend: acc.spend, desired: acc.desired, ratio: r,
            log_error: abs(math.log(r)) if r > 0 else float('nan')}
