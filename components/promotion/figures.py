"""The Evaluator's figures by slice, with TFMA's intervals, as rule.Estimates."""

from typing import Dict, Tuple

import tensorflow_model_analysis as tfma

from components.promotion import rule as rule_lib

OVERALL = 'overall'
# The EvalConfig's model spec names (pipeline/evaluation.py uses these).
CANDIDATE, BASELINE = 'candidate', 'baseline'
DIFF = 'diff'


def slice_name(slice_key: Tuple) -> str:
  """'overall', or 'column=value' for a one-feature slice."""
  if not slice_key:
    return OVERALL
  return ','.join(f'{c}={v.decode() if isinstance(v, bytes) else v}'
                  for c, v in slice_key)


def _value(value) -> float:
  return value.double_value.value


def _estimate(kv) -> rule_lib.Estimate:
  value = _value(kv.value)
  if kv.HasField('confidence_interval'):
    ci = kv.confidence_interval
    return rule_lib.Estimate(value, _value(ci.lower_bound), _value(ci.upper_bound))
  return rule_lib.Estimate.exact(value)


def load(evaluation_uri: str, candidate: str = CANDIDATE
         ) -> Dict[str, Dict[str, Dict[str, rule_lib.Estimate]]]:
  """{slice: {metric: {'candidate' | 'baseline' | 'diff': Estimate}}}.

  'diff' is TFMA's candidate - baseline (computed per jackknife sample, so its
  interval is that of the paired difference).
  """
  out: Dict[str, Dict[str, Dict[str, rule_lib.Estimate]]] = {}
  for per_slice in tfma.load_metrics(evaluation_uri):
    key = []
    for single in per_slice.slice_key.single_slice_keys:
      key.append((single.column, getattr(single, single.WhichOneof('kind'))))
    by_metric = out.setdefault(slice_name(tuple(key)), {})
    for kv in per_slice.metric_keys_and_values:
      model = kv.key.model_name or candidate
      role = DIFF if kv.key.is_diff else (CANDIDATE if model == candidate
                                          else BASELINE)
      by_metric.setdefault(kv.key.name, {})[role] = _estimate(kv)
  return out


def to_json(figures) -> Dict:
  return {s: {m: {r: e.to_dict() for r, e in roles.items()}
              for m, roles in metrics.items()} for s, metrics in figures.items()}
