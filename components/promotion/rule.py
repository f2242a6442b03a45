"""The promotion decision: three areas, each judged beyond its noise, and a rule.

Pure functions over figures (no TFX, no TFMA), so the rule is unit-tested on
crafted candidates. Every figure is an Estimate: a value with its 95% interval
(TFMA's jackknife interval for the Evaluator's metrics, a paired bootstrap for
latency). "Better beyond its CI" means the interval of candidate - baseline lies
wholly below zero; "worse beyond its CI" that it lies wholly above zero (or above
a guard).

Areas (the paper's promotion: two of three):
  1 loss_bias: PoissonLogLoss better beyond its CI, and the bias |log calibration|
    not worse beyond its CI. A rescaled model that fixes the bias but loses on
    loss does not count.
  2 business: the spend log-error better beyond its CI on the key slice (tCPA >
    250), and no tCPA bucket's spend log-error worse by more than the guard
    beyond its CI.
  3 latency: p50 faster beyond its CI at some batch size, and no p50 or p99
    slower by more than a tolerance beyond its CI at any.

Rules: `2_of_3` (recipe or architecture change) needs two areas; `refresh`
(same recipe) area 1 and the business guards; `loss_only` is the Evaluator's
blessing (today's gate); `auto` picks 2_of_3 or refresh by the recipe
fingerprints. Every rule also needs the Evaluator's value threshold (max NLL).
Without a baseline (the bootstrap) the Evaluator's blessing decides, as before.
"""

import dataclasses
import math
from typing import Dict, List, Mapping, Optional

RULES = ('2_of_3', 'refresh', 'loss_only')
AREAS = ('loss_bias', 'business', 'latency')


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A value and its 95% interval (lower = upper = value without one)."""
  value: float
  lower: float
  upper: float

  @classmethod
  def exact(cls, value: float) -> 'Estimate':
    return cls(value, value, value)

  def below(self, margin: float = 0.0) -> bool:
    """Wholly below -margin: better beyond the noise (lower is better)."""
    return math.isfinite(self.upper) and self.upper < -margin

  def above(self, margin: float = 0.0) -> bool:
    """Wholly above margin: worse beyond the noise (lower is better)."""
    return math.isfinite(self.lower) and self.lower > margin

  def has_interval(self) -> bool:
    return math.isfinite(self.lower) and math.isfinite(self.upper)

  def to_dict(self) -> Dict[str, float]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Area:
  """One area's verdict. improved None: not judged (no baseline, no figures)."""
  improved: Optional[bool]
  reason: str
  # Guards that must hold for `refresh` (the business area's slice guards).
  guards_hold: bool = True

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)


def loss_bias_area(loss_diff: Estimate, bias_diff: Estimate) -> Area:
  """Area 1 from candidate - baseline of PoissonLogLoss and of |log calibration|."""
  loss_better = loss_diff.below()
  bias_worse = bias_diff.above()
  reason = (f'loss diff {loss_diff.value:+.5f} [{loss_diff.lower:+.5f}, '
            f'{loss_diff.upper:+.5f}] {"better" if loss_better else "not better"} '
            f'beyond its CI; bias diff {bias_diff.value:+.4f} [{bias_diff.lower:+.4f}, '
            f'{bias_diff.upper:+.4f}] {"worse" if bias_worse else "not worse"}')
  return Area(loss_better and not bias_worse, reason, guards_hold=not bias_worse)


def business_area(key_slice: str, slice_diffs: Mapping[str, Estimate],
                  guard: float) -> Area:
  """Area 2 from candidate - baseline spend log-error per tCPA slice.

  Args:
    key_slice: the slice that must improve (tCPA > 250).
    slice_diffs: every tCPA slice's diff (the key slice among them).
    guard: how much worse than the baseline (absolute log-error) a slice may be
      beyond its CI.
  """
  if key_slice not in slice_diffs:
    return Area(None, f'no spend figures on the key slice {key_slice}',
                guards_hold=True)
  key = slice_diffs[key_slice]
  key_better = key.below()
  regressed: List[str] = [s for s, d in sorted(slice_diffs.items())
                          if d.above(guard)]
  # TFMA's jackknife gives no interval when a resample of a sparse slice has no
  # desired spend (no conversion): such a slice is never "better beyond its CI",
  # and the reason says so rather than printing [nan, nan].
  no_ci = [s for s, d in sorted(slice_diffs.items()) if not d.has_interval()]
  interval = (f'[{key.lower:+.4f}, {key.upper:+.4f}]' if key.has_interval() else
              '(no CI: too few conversions in a resample)')
  guards = [s for s in slice_diffs if s != key_slice]
  if guards:
    guard_text = (f'; regressed beyond the guard {guard}: {regressed}' if regressed
                  else f'; no tCPA slice worse by > {guard}')
  else:
    guard_text = ' (no tCPA in the dataset: overall spend calibration, no guards)'
  reason = (f'{key_slice} spend log-error diff {key.value:+.4f} {interval} '
            f'{"better" if key_better else "not better"} beyond its CI' + guard_text + (
                f'; no CI on {no_ci}' if no_ci else ''))
  return Area(key_better and not regressed, reason, guards_hold=not regressed)


def latency_area(diffs: Mapping[str, Mapping[str, Estimate]],
                 tolerance: float = 0.0) -> Area:
  """Area 3 from relative candidate - baseline latency percentiles.

  Args:
    diffs: {batch label: {'p50': Estimate, 'p99': Estimate, ...}}, each the
      relative difference (candidate - baseline) / baseline with its CI.
    tolerance: how much slower (relative) a percentile may be beyond its CI
      before it blocks the area (two builds of one architecture differ by a few
      tenths of a percent, which is no regression worth refusing a model for).
  """
  if not diffs:
    return Area(None, 'no latency comparison')
  faster = [b for b, d in diffs.items() if d['p50'].below()]
  slower = [f'{b} {p}' for b, d in diffs.items() for p in ('p50', 'p99')
            if p in d and d[p].above(tolerance)]
  parts = [f'{b} p50 {d["p50"].value:+.1%} [{d["p50"].lower:+.1%}, '
           f'{d["p50"].upper:+.1%}]' for b, d in diffs.items()]
  reason = '; '.join(parts) + (f'; slower beyond noise: {slower}' if slower else '')
  return Area(bool(faster) and not slower, reason)


def applied_rule(rule: str, same_recipe: bool) -> str:
  """The rule `auto` stands for: refresh on the same recipe, else 2_of_3."""
  if rule == 'auto':
    return 'refresh' if same_recipe else '2_of_3'
  if rule not in RULES:
    raise ValueError(f'unknown promotion rule {rule!r}; one of auto, {RULES}')
  return rule


def decide(rule: str, areas: Mapping[str, Area], evaluator_blessed: bool,
           value_ok: bool) -> bool:
  """Whether `rule` (not auto) promotes, given the three areas.

  Args:
    rule: 2_of_3, refresh or loss_only.
    areas: the three areas by name (AREAS).
    evaluator_blessed: the Evaluator's blessing (today's gate).
    value_ok: the candidate's overall loss is below gate.max_nll.
  """
  if rule == 'loss_only':
    return bool(evaluator_blessed)
  if not value_ok:
    return False
  if rule == '2_of_3':
    return sum(bool(a.improved) for a in areas.values()) >= 2
  if rule == 'refresh':
    return bool(areas['loss_bias'].improved) and all(
        a.guards_hold for a in areas.values())
  raise ValueError(f'unknown promotion rule {rule!r}; one of {RULES}')


def decide_all(areas: Mapping[str, Area], evaluator_blessed: bool,
               value_ok: bool) -> Dict[str, bool]:
  """What every rule would decide (recorded beside the one applied)."""
  return {r: decide(r, areas, evaluator_blessed, value_ok) for r in RULES}
