"""How often the promotion promotes: its power and its false-promotion rate.

  python -m bench.promotion_bench [--nights 400] [--quick]

A promotion rule is judged by what it decides over many nights, not by one. On
the synthetic world, where the truth is known, this simulates nights: each draws
an eval set of fresh clicks of the world (World.scoring_clicks, never logged) and
their conversions (Poisson draws of the true rate, as the truth label mode sees
them), scores a baseline and a candidate of known quality on it, and runs the
Promotion step's own decision (components/promotion/paired.py and rule.py)
under each rule. Over the nights, the share promoted is the rule's power for a
better candidate and its false-promotion rate for an equal or worse one.

The models. The baseline is the production recipe: what a model of the serving
features learns from reported conversions, E[rate x observability | click] (the
world's serving rate, E[rate | serving features], times the expected
observability of the click's advertiser, country, browser and tagging), with a
trained model's own per-click error (measured on the default make run: below).
Candidates of known quality come in three families, each solved for its true
relative change of expected Poisson log loss (in closed form over the pool):

  calibrated: what distillation brings, the conversions the production recipe
    never sees: a step a along the path from the idealised baseline b to the
    serving rate s, log c = log b + a (log s - log b), with an error of the
    baseline's size (correlated with it as two trained models' are);
  sharper: the baseline's bias kept, a smaller per-click error (a better
    ranking, no better calibration);
  not better: half the calibrated step and extra per-click noise, sized so the
    expected loss equals the baseline's or is 1% or 3% worse: the hard case for
    a rule, better calibrated but no better.

Candidate and baseline share their architecture (a nightly student against a
served one), so latency is not applicable.

Eval sets: 1, 2, 4, 8 and 16 days of the default world's clicks (2 is the
default window.eval_days, ~5.7k clicks). Each share carries its Clopper-Pearson
95% interval over the nights. The rules: `2_of_3` and `refresh` as the
Promotion step decides them; `both_improved` the two applicable areas both
improved (this rule's first form, which refused the sharper candidates);
`2_of_3_key_slice` the rule before it (the business area on the tCPA > 250
bucket alone, latency counted and never improved), on the same paired
intervals; `loss` the loss area alone. Results go to
bench/reported/promotion.json (with the world, the config and the git SHA);
`python -m bench.readme` writes the docs/benchmarks.md table from it.
"""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import json
import time
from typing import Dict, List

import numpy as np
from scipy import optimize
from scipy import special
from scipy import stats

from bench import common
from components.promotion import paired
from components.promotion import rule as rule_lib
import config as config_lib
from observation import labels
from schemas import columns
from world import generator
from world import synthetic

CONFIG = 'pipeline/configs/default.yaml'
OUT = 'bench/reported/promotion.json'
# Relative change of the candidate's expected loss against the baseline's.
BETTER = (-0.10, -0.05, -0.03, -0.01)
NOT_BETTER = (0.0, 0.01, 0.03)
# Eval sets of 1, 2 (the default's window.eval_days), 4, 8 and 16 days of the
# world's clicks.
EVAL_DAYS = (1, 2, 4, 8, 16)
POOL = 200_000
# How far along the path to the truth the equal / worse candidates are (their
# bias corrected this much), before their extra noise.
NOISY_STEP = 0.5
# The trained models' own per-click error, measured on the default make run's
# KD night (3,035 eval clicks, commit 2e1ea8b): the SD of log(prediction /
# idealised model) is 0.82 for the production student (against E[rate x
# observability | click]) and 0.67 for the distilled one (against the serving
# rate), the two errors correlated 0.68 (they share features and training
# clicks). Every simulated model carries such an error, mean-preserving.
BASELINE_NOISE = 0.82
CANDIDATE_NOISE = 0.67
NOISE_CORRELATION = 0.68


def expected_loss(mu: np.ndarray, rate: np.ndarray) -> float:
  """E[nll(y, mu)] for y ~ Poisson(rate), up to the E[log y!] both models share."""
  return float(np.mean(mu - rate * np.log(mu)))


def constant_part(rate: np.ndarray, draws: int = 64, seed: int = 0) -> float:
  """E[log y!] (Monte Carlo), to state losses relative to the full expected NLL."""
  rng = np.random.default_rng(seed)
  return float(np.mean(special.gammaln(rng.poisson(rate, (draws, rate.size)) + 1.0)))


def _lognormal(eps: np.ndarray, sigma: float) -> np.ndarray:
  return np.exp(sigma * eps - sigma * sigma / 2)


def pool(cfg, n: int, seed: int = 1) -> Dict[str, np.ndarray]:
  """Fresh clicks of the world with the true rate, the baseline (its error
  included), tCPA and bucket, and the candidates' shared error draw."""
  world = generator.World(cfg)
  day = int(cfg.world.start().timestamp()) + (cfg.world.days - 1) * 86400
  rows = world.scoring_clicks(n, day, stream=20)
  rate = sum(rows[c].astype(np.float64) for c in synthetic.TRUE_RATES)
  serving = world.serving_rate(rows, samples=64)
  rng = np.random.default_rng(seed)
  eps_b = rng.standard_normal(n)
  eps_c = (NOISE_CORRELATION * eps_b +
           np.sqrt(1 - NOISE_CORRELATION**2) * rng.standard_normal(n))
  # The sharper family's error: the baseline's own, shrunk (its bias kept).
  ideal = serving * world.expected_observability(rows)
  tcpa = rows[synthetic.TARGET_CPA].astype(np.float64)
  return {'rate': rate, 'serving': serving, 'ideal_baseline': ideal,
          'baseline': ideal * _lognormal(eps_b, BASELINE_NOISE),
          'candidate_error': _lognormal(eps_c, BASELINE_NOISE),
          'candidate_eps': eps_c,
          'extra_eps': rng.standard_normal(n), 'tcpa': tcpa,
          'bucket': labels.tcpa_bucket(tcpa)}


def candidates(p: Dict[str, np.ndarray]) -> Dict[str, Dict]:
  """Candidate predictions by family and true relative change of expected loss
  (the module's docstring)."""
  rate, base = p['rate'], p['baseline']
  base_loss = expected_loss(base, rate)
  full = base_loss + constant_part(rate)
  ideal = p['ideal_baseline']
  log_path = np.log(p['serving']) - np.log(ideal)

  def calibrated(a, error=None):
    error = p['candidate_error'] if error is None else error
    return ideal * np.exp(a * log_path) * error

  def sharper(sigma):
    return ideal * _lognormal(p['candidate_eps'], sigma)

  def change(mu):
    return (expected_loss(mu, rate) - base_loss) / full

  def solve(f, lo, hi, target):
    if (f(lo) - target) * (f(hi) - target) > 0:
      return None  # out of the family's reach
    return optimize.brentq(lambda x: f(x) - target, lo, hi)

  out = {}
  for target in BETTER:
    a = solve(lambda a: change(calibrated(a)), 0.0, 1.0, target)
    if a is not None:
      out[f'calibrated {target:+.0%}'] = {
          'family': 'calibrated', 'target': target, 'step': a, 'log_sd': BASELINE_NOISE,
          'extra_noise': 0.0, 'pred': calibrated(a)}
    sigma = solve(lambda s: change(sharper(s)), 0.0, BASELINE_NOISE, target)
    if sigma is not None:
      out[f'sharper {target:+.0%}'] = {
          'family': 'sharper', 'target': target, 'step': 0.0, 'log_sd': sigma,
          'extra_noise': 0.0, 'pred': sharper(sigma)}
  step = calibrated(NOISY_STEP)
  for target in NOT_BETTER:
    sigma = solve(lambda s: change(step * _lognormal(p['extra_eps'], s)), 0.0, 5.0,
                  target)
    out[f'not better {target:+.0%}'] = {
        'family': 'not better', 'target': target, 'step': NOISY_STEP,
        'log_sd': BASELINE_NOISE, 'extra_noise': sigma,
        'pred': step * _lognormal(p['extra_eps'], sigma)}
  # The distilled student as measured on the default KD night (the serving rate
  # with the distilled student's error): where a real candidate sits.
  out['as measured'] = {
      'family': 'as measured', 'target': None, 'step': 1.0,
      'log_sd': CANDIDATE_NOISE, 'extra_noise': 0.0,
      'pred': calibrated(1.0, _lognormal(p['candidate_eps'], CANDIDATE_NOISE))}
  for cand in out.values():
    cand['true_change'] = change(cand['pred'])
  return out


def decisions(night: paired.Night, cfg):
  """What each rule decides on one night (latency not applicable: one graph).

  `2_of_3` and `refresh` as the Promotion step runs them (paired.figures,
  rule.areas, rule.decide); `both_improved` loss and business both improved
  with every guard; `2_of_3_key_slice` the rule before it (the business
  area judged on the tCPA > 250 bucket alone, latency counted as an area that
  did not improve); `loss` the loss area alone. Returns ({rule: promoted}, the
  relative loss difference the night resolves)."""
  pair = paired.figures(night, columns.TCPA_BUCKETS)
  areas = rule_lib.areas(pair, rule_lib.not_applicable('one graph'),
                         cfg.slice_guard, cfg.min_guard_conversions)
  out = {r: rule_lib.decide(r, areas, True, True) for r in ('2_of_3', 'refresh')}
  key = pair['buckets'].get(columns.HIGH_TCPA_BUCKET)
  key_better = bool(key is not None and key['diff'].below())
  out['both_improved'] = bool(
      areas['loss_bias'].improved and areas['business'].improved and
      all(a.guards_hold for a in areas.values()))
  out['2_of_3_key_slice'] = (bool(areas['loss_bias'].improved) + key_better) >= 2
  out['loss'] = bool(areas['loss_bias'].improved)
  return out, pair['loss'].resolvable


def binomial_ci(k: int, n: int):
  """Clopper-Pearson 95% interval of a share (scipy.stats)."""
  ci = stats.binomtest(k, n).proportion_ci(0.95)
  return [float(ci.low), float(ci.high)]


def run(nights: int, eval_days, seed: int = 0, log=print) -> Dict:
  cfg = config_lib.load_config(CONFIG, [])
  per_day = cfg.world.num_clicks / cfg.world.days
  sizes = [int(round(per_day * d)) for d in eval_days]
  t0 = time.time()
  p = pool(cfg, POOL)
  cands = candidates(p)
  log(f'pool of {POOL:,} clicks and {len(cands)} candidates in {time.time() - t0:.0f}s')
  rng = np.random.default_rng(seed)
  results: List[Dict] = []
  for days, n in zip(eval_days, sizes):
    counts: Dict[str, Dict[str, int]] = {c: {} for c in cands}
    resolvable: List[float] = []
    for _ in range(nights):
      idx = rng.choice(POOL, n, replace=False)
      y = rng.poisson(p['rate'][idx])
      for name, cand in cands.items():
        night = paired.Night(y.astype(np.float64), np.ones(n), cand['pred'][idx],
                             p['baseline'][idx], p['tcpa'][idx], p['bucket'][idx])
        decided, resolves = decisions(night, cfg.promotion)
        if name == 'as measured':
          resolvable.append(resolves)
        for rule, promoted in decided.items():
          counts[name][rule] = counts[name].get(rule, 0) + int(promoted)
    for name, cand in cands.items():
      results.append({
          'eval_days': days, 'eval_clicks': n, 'candidate': name,
          **{k: cand[k] for k in ('family', 'target', 'true_change', 'step',
                                  'log_sd', 'extra_noise')},
          'nights': nights,
          'promoted': {r: {'share': k / nights, 'ci': binomial_ci(k, nights)}
                       for r, k in counts[name].items()}})
    log(f'{n:>6,} eval clicks: ' + ', '.join(
        f'{c} {counts[c]["2_of_3"] / nights:.2f}' for c in cands) +
        f' (2_of_3); resolves {np.median(resolvable):.1%} ({time.time() - t0:.0f}s)')
    for r in results[-len(cands):]:
      r['resolvable'] = float(np.median(resolvable))
  base_full = expected_loss(p['baseline'], p['rate']) + constant_part(p['rate'])
  return {
      'name': 'promotion',
      'what': 'share of simulated nights promoted, by rule, candidate and eval size',
      'world': {'config': CONFIG, 'seed': cfg.world.seed,
                'spec_hash': generator.spec_hash(cfg)},
      'baseline': 'E[rate | serving features] x expected observability '
                  '(the production recipe at its best)',
      'baseline_expected_nll': base_full,
      'pool_clicks': POOL, 'noisy_step': NOISY_STEP,
      'model_error': {'baseline_log_sd': BASELINE_NOISE,
                      'candidate_log_sd': CANDIDATE_NOISE,
                      'correlation': NOISE_CORRELATION},
      'targets': {'power_at_5pct': 0.9, 'false_promotion': 0.05},
      'default_eval_days': cfg.window.eval_days,
      'default_rule': cfg.promotion.rule,
      'results': results,
      **common.provenance(cfg),
  }


RULE_TITLES = {'2_of_3': '2_of_3 (default on a recipe change)',
               'refresh': 'refresh (default on the same recipe)',
               'both_improved': 'loss and business both improved',
               '2_of_3_key_slice': '2_of_3, business on tCPA > 250 (before)',
               'loss': 'loss area alone'}


def _share(cell: Dict) -> str:
  lo, hi = cell['ci']
  return f'{cell["share"]:.2f} [{lo:.2f}, {hi:.2f}]'


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md tables: every rule at the default eval size, then the default
  rule's power curve over eval sizes."""
  rows = result['results']
  default = result['default_eval_days']
  by_size = {}
  for r in rows:
    by_size.setdefault(r['eval_days'], []).append(r)
  at_default = by_size[default]
  rules = list(RULE_TITLES)
  clicks = at_default[0]['eval_clicks']
  lines = [f'Share of {at_default[0]["nights"]} simulated nights promoted at the default '
           f'eval size ({default} days, {clicks:,} clicks), with Clopper-Pearson 95% '
           'intervals; the true change is the candidate\'s expected Poisson log loss '
           'against the baseline\'s on the world\'s truth:', '',
           '| candidate | true change | ' + ' | '.join(RULE_TITLES[r] for r in rules) + ' |',
           '|---|---:|' + '---:|' * len(rules)]
  for r in at_default:
    lines.append(f'| {r["candidate"]} | {r["true_change"]:+.1%} | ' +
                 ' | '.join(_share(r['promoted'][k]) for k in rules) + ' |')
  sizes = sorted(by_size)
  lines += ['', f'The default rule on a recipe change (`2_of_3`) by eval size (the '
            'share promoted; "resolves": the median smallest relative loss difference '
            'the night detects with 80% power, for the as-measured candidate):', '',
            '| candidate | ' + ' | '.join(
                f'{d} d ({by_size[d][0]["eval_clicks"]:,})' for d in sizes) + ' |',
            '|---|' + '---:|' * len(sizes)]
  for i, r in enumerate(at_default):
    lines.append(f'| {r["candidate"]} | ' + ' | '.join(
        f'{by_size[d][i]["promoted"]["2_of_3"]["share"]:.2f}' for d in sizes) + ' |')
  lines.append('| resolves | ' + ' | '.join(
      f'{by_size[d][0]["resolvable"]:.1%}' for d in sizes) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.promotion_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--nights', type=int, default=400)
  parser.add_argument('--quick', action='store_true',
                      help='100 nights at two sizes, to bench/results/ (minutes)')
  parser.add_argument('--out', default=OUT)
  args = parser.parse_args(argv)
  if args.quick:
    result = run(100, EVAL_DAYS[:2])
    result['quick'] = True
    common.write_json('bench/results/promotion_quick.json', result)
    return 0
  if common.git_sha().endswith('-dirty'):
    parser.error('a reported result is written from a clean tree (commit first); '
                 '--quick writes a quick one to bench/results/')
  result = run(args.nights, EVAL_DAYS)
  common.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
