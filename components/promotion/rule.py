"""The promotion decision: three areas, each judged beyond its noise, and a rule.

Pure functions over figures (no TFX, no TFMA), so the rule is unit-tested on
crafted candidates and the promotion benchmark (bench/promotion_bench.py) runs
the very same decisions on simulated nights. Every figure is an Estimate: a value
with its 95% interval (paired per-click intervals for loss, bias and spend,
components/promotion/paired.py; a paired bootstrap for latency). "Better beyond
its CI" means the interval of candidate - baseline lies wholly below zero;
"worse beyond its CI" that it lies wholly above zero (or above a guard).

Areas (the paper's promotion: two of three):
  1 loss_bias: the Poisson log loss better beyond its CI, and the bias |log
    calibration| not worse beyond its CI. Guards: neither the loss nor the bias
    worse beyond its CI.
  2 business: the spend log-error |log(implied / desired spend)| better beyond
    its CI over every scored click (without tCPA, every click weighs 1: the
    overall calibration); guards: no tCPA bucket's spend log-error worse by more
    than the slice guard beyond its CI.
  3 latency: only where the candidate's TFLite graph differs from the
    baseline's (architecture or quantization); otherwise not applicable, since
    two builds of one graph cannot differ but by noise. Where applicable: p50
    faster beyond its CI at some batch size, guarded by no p50 or p99 slower by
    more than a tolerance beyond its CI.

Rules: `2_of_3` (recipe or architecture change) needs two improved areas when
all three apply, and every guard; when latency does not apply (a nightly student
of the served architecture), area 1 improved and the business area not worse
beyond its CI. Requiring both to improve refused a candidate truly 5% better in
the loss, a proper score, whose spend calibration was already as good as the
baseline's (bench/promotion_bench.py, the sharper candidates). `refresh` (same
recipe) area 1 and every guard; `loss_only` is the Evaluator's blessing; `auto`
picks 2_of_3 or refresh by the recipe fingerprints. Every rule also needs the
Evaluator's value threshold (max NLL) and a failed fraction of the fallback band
within its cap. Without a baseline (the bootstrap) the Evaluator decides.
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
    return bool(math.isfinite(self.upper) and self.upper < -margin)

  def above(self, margin: float = 0.0) -> bool:
    """Wholly above margin: worse beyond the noise (lower is better)."""
    return bool(math.isfinite(self.lower) and self.lower > margin)

  def has_interval(self) -> bool:
    return bool(math.isfinite(self.lower) and math.isfinite(self.upper))

  def to_dict(self) -> Dict[str, float]:
    return dataclasses.asdict(self)

  def text(self, fmt: str = '+.4f') -> str:
    if not self.has_interval():
      return f'{self.value:{fmt}} (no CI)'
    return f'{self.value:{fmt}} [{self.lower:{fmt}}, {self.upper:{fmt}}]'


@dataclasses.dataclass
class Area:
  """One area's verdict. improved None: not judged (no baseline, no figures).
  applicable False: the area cannot tell the models apart (latency of two builds
  of one graph); the rule does not count it."""
  improved: Optional[bool]
  reason: str
  # Guards that must hold for any rule but loss_only.
  guards_hold: bool = True
  applicable: bool = True
  # The area's own figure worse beyond its CI (the overall spend for area 2).
  worse: bool = False

  def __post_init__(self):
    # Plain bools (numpy's do not serialise to JSON).
    if self.improved is not None:
      self.improved = bool(self.improved)
    self.guards_hold = bool(self.guards_hold)
    self.applicable = bool(self.applicable)
    self.worse = bool(self.worse)

  def to_dict(self) -> Dict:
    return dataclasses.asdict(self)


def loss_bias_area(loss_diff: Estimate, bias_diff: Estimate,
                   relative: Optional[Estimate] = None) -> Area:
  """Area 1 from candidate - baseline of the Poisson log loss and of |log
  calibration| (`relative`: the loss diff relative to the baseline's loss, for
  the reason)."""
  loss_better = loss_diff.below()
  loss_worse = loss_diff.above()
  bias_worse = bias_diff.above()
  shown = (f'loss {relative.text("+.2%")}' if relative is not None
           else f'loss diff {loss_diff.text("+.5f")}')
  reason = (f'{shown} {"better" if loss_better else "worse" if loss_worse else "not better"}'
            f' beyond its CI; bias diff {bias_diff.text()} '
            f'{"worse" if bias_worse else "not worse"}')
  return Area(loss_better and not bias_worse, reason,
              guards_hold=not (bias_worse or loss_worse), worse=loss_worse)


def business_area(overall: Estimate, bucket_diffs: Mapping[str, Estimate],
                  guard: float, ratios: Optional[Mapping[str, float]] = None,
                  conversions: Optional[Mapping[str, float]] = None,
                  min_conversions: float = 0) -> Area:
  """Area 2 from candidate - baseline spend log-error, overall and per tCPA
  bucket (empty without tCPA).

  Args:
    overall: the spend log-error diff over every scored click.
    bucket_diffs: the tCPA buckets' diffs, the guards.
    guard: how much worse than the baseline (absolute log-error) a bucket may be
      beyond its CI.
    ratios: implied / desired spend of 'candidate' and 'baseline' (for the reason).
    conversions: each bucket's eval conversions; a bucket with fewer than
      `min_conversions` guards nothing (its normal interval is no interval).
  """
  conversions = conversions or {}
  thin = sorted(s for s in bucket_diffs
                if conversions.get(s, float('inf')) < min_conversions)
  judged = {s: d for s, d in sorted(bucket_diffs.items()) if s not in thin}
  better = overall.below()
  worse = overall.above()
  regressed: List[str] = [s for s, d in judged.items() if d.above(guard)]
  # A bucket whose interval could not be formed guards nothing; say so.
  no_ci = [s for s, d in judged.items() if not d.has_interval()]
  spend = ''
  if ratios:
    spend = (f' (implied / desired spend: candidate {ratios["candidate"]:.3f}, '
             f'baseline {ratios["baseline"]:.3f})')
  if bucket_diffs:
    guard_text = (f'; regressed beyond the guard {guard}: {regressed}' if regressed
                  else f'; no tCPA bucket worse by > {guard}')
    if thin:
      guard_text += (f' (fewer than {min_conversions:g} eval conversions, not '
                     f'judged: {thin})')
  else:
    guard_text = ' (no tCPA in the dataset: every click weighs 1, no bucket guards)'
  reason = (f'overall spend log-error diff {overall.text()} '
            f'{"better" if better else "worse" if worse else "not better"} beyond its CI'
            f'{spend}{guard_text}'
            + (f'; no CI on {no_ci}' if no_ci else ''))
  if not overall.has_interval():
    return Area(None, reason, guards_hold=not regressed)
  return Area(better and not regressed, reason, guards_hold=not regressed,
              worse=worse)


def areas(pair: Mapping, latency: Area, guard: float, min_conversions: float
          ) -> Dict[str, Area]:
  """The three areas from paired.figures' comparisons and the latency area
  (latency_area, or not_applicable for two builds of one graph)."""
  loss = pair['loss']
  spend = pair['spend']
  buckets = pair['buckets']
  return {
      'loss_bias': loss_bias_area(loss.diff, pair['bias']['diff'], loss.relative),
      'business': business_area(
          spend['diff'], {s: b['diff'] for s, b in buckets.items()}, guard,
          {'candidate': spend['candidate_ratio'].value,
           'baseline': spend['baseline_ratio'].value},
          {s: b['conversions'] for s, b in buckets.items()}, min_conversions),
      'latency': latency,
  }


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
  return Area(bool(faster) and not slower, reason, guards_hold=not slower,
              worse=bool(slower))


def not_applicable(reason: str) -> Area:
  """An area that cannot tell the models apart: not counted by the rule."""
  return Area(None, f'not applicable: {reason}', applicable=False)


def applied_rule(rule: str, same_recipe: bool) -> str:
  """The rule `auto` stands for: refresh on the same recipe, else 2_of_3."""
  if rule == 'auto':
    return 'refresh' if same_recipe else '2_of_3'
  if rule not in RULES:
    raise ValueError(f'unknown promotion rule {rule!r}; one of auto, {RULES}')
  return rule


def all_apply(areas: Mapping[str, Area]) -> bool:
  """Whether every area can tell the models apart (2_of_3 counts two of them);
  else 2_of_3 is area 1 improved, the others not worse."""
  return all(a.applicable for a in areas.values())


def decide(rule: str, areas: Mapping[str, Area], evaluator_blessed: bool,
           value_ok: bool, within_cap: bool = True) -> bool:
  """Whether `rule` (not auto) promotes, given the three areas.

  Args:
    rule: 2_of_3, refresh or loss_only.
    areas: the three areas by name (AREAS).
    evaluator_blessed: the Evaluator's blessing (today's gate).
    value_ok: the candidate's overall loss is below gate.max_nll.
    within_cap: the candidate's failed fraction is within the fallback band's
      cap (models/fallback.py); over it no rule promotes.
  """
  if not within_cap:
    return False
  if rule == 'loss_only':
    return bool(evaluator_blessed)
  if not value_ok or not all(a.guards_hold for a in areas.values()):
    return False
  if rule == '2_of_3':
    if all_apply(areas):
      return sum(bool(a.improved) for a in areas.values()) >= 2
    return bool(areas['loss_bias'].improved) and not any(
        a.worse for a in areas.values() if a.applicable)
  if rule == 'refresh':
    return bool(areas['loss_bias'].improved)
  raise ValueError(f'unknown promotion rule {rule!r}; one of {RULES}')


def decide_all(areas: Mapping[str, Area], evaluator_blessed: bool,
               value_ok: bool, within_cap: bool = True) -> Dict[str, bool]:
  """What every rule would decide (recorded beside the one applied)."""
  return {r: decide(r, areas, evaluator_blessed, value_ok, within_cap) for r in RULES}


def explain(rule: str, promoted: bool, areas: Mapping[str, Area],
            value_ok: bool = True, within_cap: bool = True) -> str:
  """One line: why the rule promoted or not."""
  improved = [n for n, a in areas.items() if a.applicable and a.improved]
  applicable = [n for n, a in areas.items() if a.applicable]
  broken = [n for n, a in areas.items() if not a.guards_hold]
  if not within_cap:
    why = "the fallback band's failed fraction is over its cap"
  elif not value_ok:
    why = 'the loss is not below gate.max_nll'
  elif rule == 'loss_only':
    why = "the Evaluator's blessing"
  elif broken:
    why = f'guards broken in {broken}'
  elif rule == 'refresh':
    why = ('area 1 improved' if areas['loss_bias'].improved else
           'area 1 (loss and bias) not improved')
  elif all_apply(areas):
    why = (f'{len(improved)} of 3 areas improved ({", ".join(improved) or "none"};'
           ' 2 needed)')
  else:
    off = [n for n, a in areas.items() if not a.applicable]
    worse = [n for n in applicable if n != 'loss_bias' and areas[n].worse]
    others = [n for n in applicable if n != 'loss_bias']
    why = (('area 1 improved' if areas['loss_bias'].improved else
            'area 1 (loss and bias) not improved') +
           (f', {worse} worse beyond its CI' if worse else
            f', {" and ".join(others)} not worse' if others else '') +
           f' ({" and ".join(off)} not applicable: area 1 needed, the rest not worse)')
  return f'{"promoted" if promoted else "not promoted"} under {rule}: {why}'
