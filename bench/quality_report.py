"""The quality benchmark's numbers, from the predictions it saved (docs/architecture.md §12).

Everything is scored on each world's scoring set (new clicks of that world) in
three slices: overall, tCPA > 250 and low-observability browsers:

- NLL: Poisson NLL per click against the sampled true total conversions;
- excess risk: E[NLL] minus the Bayes floor's, in closed form from the true rates,
  mean(l log(l/mu) - l + mu) (models/nll.py): no count-sampling noise;
- calibration: sum(pConvs) / sum(true rate), and the NLL and excess risk after one
  global recalibration (pConvs times the one factor sum(y) / sum(pConvs) per model),
  so bias and ranking are seen apart;
- gap closed: the share of the reachable gap, production's excess risk minus the
  serving-only floor's, that a model closes.

Every figure carries a 95% CI from bench/stats.py: the world is the top-level
unit, each world's value pools its training seeds and scoring clicks, and the
interval is a t-interval over worlds. Differences are paired: the same world,
scoring clicks and training seeds on both sides.
"""

import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from bench import stats
from models import nll
from schemas import columns
from world import observability
from world import synthetic

SLICES = ('overall', 'tcpa_gt_250', 'low_observability')
# scoring.npz holds a boolean column per slice other than overall.
SLICE_PREFIX = 'slice_'
INT8 = '_int8'  # the model name suffix of a recipe's INT8 model
DEFAULT_RECIPE = 'kd_full'
# Students trained without a teacher (issue 14, deliverable 6).
TEACHER_FREE = ('production', 'offset', 'offset_panel', 'panel_only', 'offset_obs_head')
# Models with one prediction per world (not trained per seed).
REFERENCES = ('floor', 'serving_floor', 'glm', 'lgbm', 'teacher')
LABELS = {
    'floor': 'Bayes floor (true rate)',
    'serving_floor': 'serving-only floor (E[rate given the serving features])',
    'glm': 'Poisson GLM, observability offset',
    'lgbm': 'LightGBM Poisson, observability offset',
    'teacher': 'teacher (serving + teacher-only features)',
    'production': 'student: production recipe (no teacher, no observability)',
    'offset': 'student: observability offset, no teacher',
    'offset_panel': 'student: offset calibrated on the panel, no teacher',
    'panel_only': 'student: trained on the panel alone, no teacher',
    'offset_obs_head': 'student: offset + its own panel observability head, no teacher',
    'kd_output': 'student: KD, output distillation',
    'kd_aux': 'student: KD + auxiliary head',
    'kd_aux_hint': 'student: KD + aux + hint',
    'kd_full': 'student: KD + aux + hint + tCPA weights (default)',
}


def _ci(mean: float, lo: float, hi: float) -> Dict:
  return {'mean': float(mean), 'ci95': [float(lo), float(hi)]}


class World:
  """One world's scoring set and every model's predictions, [seeds, clicks]."""

  def __init__(self, path: str):
    with np.load(os.path.join(path, 'scoring.npz')) as z:
      self.rows = {k: z[k] for k in z.files}
    self.path = path
    self.y = self.rows[columns.TRUE_CONVERSIONS].astype(np.float64)
    self.rate = sum(self.rows[c].astype(np.float64) for c in synthetic.TRUE_RATES)
    self.masks = {'overall': np.ones(len(self.y), bool),
                  **{s: self.rows[SLICE_PREFIX + s].astype(bool) for s in SLICES[1:]}}

  def load(self, name: str) -> np.ndarray:
    return np.load(os.path.join(self.path, 'predictions', name + '.npy')).astype(
        np.float64)

  def predictions(self, model: str, seeds: Sequence[int]) -> np.ndarray:
    """[S, N] predictions of `model` ('<recipe>' float, '<recipe>_int8')."""
    if model == 'floor':
      return self.rate[None]
    if model == 'serving_floor':
      return self.rows['serving_rate'][None].astype(np.float64)
    if model in REFERENCES:
      return self.load(model)[None]
    if model.endswith(INT8):
      recipe, kind = model[:-len(INT8)], 'int8'
    else:
      recipe, kind = model, 'float'
    return np.stack([self.load(f'{recipe}-s{s}-{kind}') for s in seeds])


def _losses(world: World, pred: np.ndarray, mask: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-click NLL and excess risk, [S, n] on `mask`, raw and recalibrated."""
  scale = world.y.sum() / pred.sum(axis=1, keepdims=True)  # one global factor
  y, rate, p = world.y[mask], world.rate[mask], pred[:, mask]
  y, rate = np.broadcast_to(y, p.shape), np.broadcast_to(rate, p.shape)

  def shaped(fn, truth, mu):  # models/nll.py works on flat arrays
    return fn(truth, mu).reshape(p.shape)
  return {
      'nll': shaped(nll.poisson_nll_per_example, y, p),
      'excess_risk': shaped(nll.excess_risk_per_example, rate, p),
      'recalibrated_nll': shaped(nll.poisson_nll_per_example, y, p * scale),
      'recalibrated_excess_risk': shaped(nll.excess_risk_per_example, rate, p * scale),
  }


class Scorer:
  """Caches per-click losses per (world, model, slice)."""

  def __init__(self, worlds: List[World], seeds: Sequence[int]):
    self.worlds = worlds
    self.seeds = list(seeds)
    self._cache = {}

  def losses(self, model: str, slice_name: str, seeds=None) -> List[Dict]:
    seeds = list(seeds or self.seeds)
    key = (model, slice_name, tuple(seeds))
    if key not in self._cache:
      self._cache[key] = [_losses(w, w.predictions(model, seeds), w.masks[slice_name])
                          for w in self.worlds]
    return self._cache[key]

  def absolute(self, model: str, slice_name: str) -> Dict:
    out = {}
    per_world = self.losses(model, slice_name)
    for metric in ('nll', 'excess_risk', 'recalibrated_nll', 'recalibrated_excess_risk'):
      out[metric] = _ci(*stats.interval([l[metric].mean() for l in per_world]))
    cal = []
    for w in self.worlds:
      p = w.predictions(model, self.seeds)[:, w.masks[slice_name]]
      cal.append(float(np.mean(p.sum(axis=1)) / w.rate[w.masks[slice_name]].sum()))
    out['calibration'] = _ci(*stats.interval(cal))
    return out

  def paired(self, model: str, reference: str, slice_name: str,
             metrics=('nll', 'excess_risk'), seeds=None, reference_seeds=None) -> Dict:
    a = self.losses(model, slice_name, seeds)
    b = self.losses(reference, slice_name, reference_seeds)
    out = {}
    for metric in metrics:
      sa, sb = [x[metric] for x in a], [x[metric] for x in b]
      # A one-per-world model against a per-seed one: the same values for every seed.
      sa = [np.broadcast_to(x, np.broadcast_shapes(x.shape, y.shape)) for x, y in zip(sa, sb)]
      sb = [np.broadcast_to(y, x.shape) for x, y in zip(sa, sb)]
      out[metric] = stats.paired_relative(sa, sb)
    return out

  def gap_closed(self, model: str, slice_name: str) -> Dict:
    """(ER_production - ER_model) / (ER_production - ER_serving_floor), per world."""
    er = {m: [l['excess_risk'].mean() for l in self.losses(m, slice_name)]
          for m in (model, 'production', 'serving_floor')}
    values = [(p - m) / (p - f) for m, p, f in
              zip(er[model], er['production'], er['serving_floor'])]
    return _ci(*stats.interval(values))


# Where observability varies (docs/observability-world.md): the groups a model's
# calibration is shown by, as functions of a world's scoring rows.
CALIBRATION_MODELS = ('production', 'offset', 'lgbm', DEFAULT_RECIPE)
OBSERVABILITY_QUINTILES = 5
ADVERTISER_DECILES = 10
ADVERTISER = 'advertiser_id'
# scoring.npz column: World.expected_observability of each scoring click.
EXPECTED_OBSERVABILITY = 'expected_observability'


def calibration_groups(rows) -> Dict[str, Dict[str, np.ndarray]]:
  """group -> value -> mask: browser, privacy region, first-party flag, and
  quintile of the click's expected observability given its advertiser, region,
  browser and tagging (each where the rows have its columns)."""
  groups = {}
  if synthetic.BROWSER in rows:
    browser = rows[synthetic.BROWSER]
    groups['browser'] = {f'browser {int(b)}': browser == b for b in np.unique(browser)}
  if 'country' in rows:
    region = observability.region_of_country(rows['country'])
    groups['region'] = {name: region == r
                        for r, name in enumerate(observability.REGION_NAMES)}
  if synthetic.ADVERTISER_FIRST_PARTY in rows:
    fp = rows[synthetic.ADVERTISER_FIRST_PARTY]
    groups['first_party'] = {'first-party tagging': fp == 1, 'browser tags only': fp == 0}
  expected = np.asarray(rows.get(EXPECTED_OBSERVABILITY, []), np.float64)
  if len(expected) and np.ptp(expected) > 0:
    edges = np.quantile(expected, np.linspace(0, 1, OBSERVABILITY_QUINTILES + 1))
    q = np.clip(np.searchsorted(edges, expected, side='right') - 1, 0,
                OBSERVABILITY_QUINTILES - 1)
    # Named by rank alone: the edges differ from world to world.
    groups['expected_observability'] = {f'Q{i + 1}': q == i
                                        for i in range(OBSERVABILITY_QUINTILES)}
    if ADVERTISER in rows:
      groups['advertiser_decile'] = advertiser_deciles(rows[ADVERTISER], expected)
  return groups


def advertiser_deciles(advertiser: np.ndarray, expected: np.ndarray
                       ) -> Dict[str, np.ndarray]:
  """Clicks grouped by their advertiser's decile of mean expected observability
  (advertisers ranked, each decile a tenth of the advertisers seen): consent mix
  and tag coverage are per advertiser, the prior's blind spot."""
  ids, inverse = np.unique(np.asarray(advertiser), return_inverse=True)
  mean = np.bincount(inverse, expected) / np.bincount(inverse)
  rank = np.empty(len(ids), np.int64)
  rank[np.argsort(mean, kind='stable')] = np.arange(len(ids))
  decile = rank * ADVERTISER_DECILES // len(ids)
  return {f'D{i + 1}': decile[inverse] == i for i in range(ADVERTISER_DECILES)}


def calibration_by_slice(worlds: List[World], models: Sequence[str],
                         seeds: Sequence[int]) -> Dict:
  """model -> group -> value -> calibration (sum pConvs / sum true rate), mean
  [95% CI] over the worlds that have the value."""
  out = {}
  per_world_groups = [calibration_groups(w.rows) for w in worlds]
  for m in models:
    out[m] = {}
    for g, values in per_world_groups[0].items():
      out[m][g] = {}
      for name in values:
        cal = []
        for w, groups in zip(worlds, per_world_groups):
          mask = groups.get(g, {}).get(name)
          if mask is None:
            continue
          p = w.predictions(m, seeds)[:, mask]
          cal.append(float(p.sum(axis=1).mean() / max(w.rate[mask].sum(), 1e-300)))
        out[m][g][name] = _ci(*stats.interval(cal))
  return out


def observability_errors(rows, teacher: np.ndarray, prior: np.ndarray,
                         expected: Optional[np.ndarray] = None) -> Dict:
  """How far the teacher's per-click observability is from the world's, beside
  the population prior's, off the panel (where it is estimated).

  Two distances. Against the true per-click report probability (which carries the
  click's hidden consent, 0 or 1): the mean absolute error, as first reported.
  That is not a proper score for an estimate of a probability: against a 0/1
  hidden state it favours the mode over the mean, so an estimator exact in
  expectation can lose to a biased one. Against the expected report probability
  given what a model can know of the click (World.expected_observability_by_window:
  its advertiser, country, browser, first-party flag): the root mean squared
  error, the proper comparison (squared error against the per-click truth ranks
  estimators the same way, plus a variance neither can remove).

  Args:
    rows: example columns with true_observability_<w>, true_rate_<w>, in_panel
      and the slice columns of calibration_groups.
    teacher: [n, windows] the teacher's observability (teacher_observability_<w>).
    prior: [n, windows] the prior's mature share for each click's browser x
      first-party row (what the teacher starts from).
    expected: [n, windows] the expected report probability, if known.

  Returns:
    group -> value -> {'teacher': e, 'prior': e, 'clicks': n} with e the mean
    absolute error against the per-click truth over the value's clicks and
    windows, weighted by the true rate (an error matters in proportion to the
    conversions it mislabels), and with `expected`, 'teacher_rmse' and
    'prior_rmse' (same weights) against it; group 'overall' too.
  """
  off_panel = np.asarray(rows[synthetic.IN_PANEL]).reshape(-1) == 0
  truth = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                    for c in synthetic.TRUE_OBSERVABILITY], 1)
  weight = np.stack([np.asarray(rows[c], np.float64).reshape(-1)
                     for c in synthetic.TRUE_RATES], 1)
  groups = {'overall': {'all clicks': np.ones(len(off_panel), bool)},
            **calibration_groups(rows)}
  out = {}
  for g, values in groups.items():
    out[g] = {}
    for name, mask in values.items():
      keep = mask & off_panel
      w = weight[keep]
      total = max(float(w.sum()), 1e-300)
      out[g][name] = {
          'teacher': float((w * np.abs(teacher[keep] - truth[keep])).sum() / total),
          'prior': float((w * np.abs(prior[keep] - truth[keep])).sum() / total),
          'clicks': int(keep.sum())}
      if expected is not None:
        for who, q in (('teacher', teacher), ('prior', prior)):
          out[g][name][who + '_rmse'] = float(np.sqrt(
              (w * (q[keep] - expected[keep]) ** 2).sum() / total))
  return out


def observability_table(per_world: Sequence[Dict]) -> List[str]:
  """Markdown: the teacher's and the prior's observability error by slice, mean
  over worlds, and the teacher's relative to the prior's with its 95% CI; the
  proper comparison (RMSE against the expected report probability) first where
  the worlds have it."""
  rmse = all('teacher_rmse' in per_world[0][g][n]
             for g in per_world[0] for n in per_world[0][g])
  lines = ['**Teacher observability** off the panel, true-rate weighted, mean over '
           'worlds, teacher / prior with its 95% CI over worlds' + (
               ': RMSE against the expected report probability given the click\'s '
               'advertiser, country, browser and first-party flag (the proper '
               'score), then the mean absolute error against the per-click truth '
               '(improper: the truth carries the click\'s hidden 0/1 consent):'
               if rmse else ' (mean absolute error against the per-click truth):'), '']
  head = '| slice |'
  rule = '|---|'
  keys = (('_rmse', 'RMSE'), ('', 'MAE')) if rmse else (('', 'MAE'),)
  for _, label in keys:
    head += f' teacher {label} | prior {label} | teacher / prior {label} |'
    rule += '---:|---:|---:|'
  lines += [head, rule]
  for g, values in per_world[0].items():
    for name in values:
      have = [w[g][name] for w in per_world if name in w.get(g, {})]
      line = f'| {g}: {name} |'
      for suffix, _ in keys:
        t, p = 'teacher' + suffix, 'prior' + suffix
        line += (f' {np.mean([h[t] for h in have]):.4f} | '
                 f'{np.mean([h[p] for h in have]):.4f} |')
        if min(h[p] for h in have) < 1e-9:
          line += ' (prior exact) |'
        else:
          ratio = stats.interval([h[t] / h[p] for h in have])
          line += f' {ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}] |'
      lines.append(line)
  return lines


def teacher_calibration(worlds: List[World]) -> Dict:
  """The teacher's calibration per delay window, per world and over worlds."""
  per_world = []
  for w in worlds:
    rates = w.load('teacher_windows')
    per_world.append({name: float(rates[:, i].sum() / w.rows[c].astype(np.float64).sum())
                      for i, (name, c) in enumerate(zip(synthetic.WINDOW_NAMES,
                                                        synthetic.TRUE_RATES))})
    per_world[-1]['total'] = float(rates.sum() / w.rate.sum())
  keys = list(per_world[0])
  return {'per_world': per_world,
          'mean': {k: _ci(*stats.interval([p[k] for p in per_world])) for k in keys}}


def reproducibility(world: World, first: str, again: str) -> Dict:
  """How far a model trained twice by the same command, same seed, differs."""
  a, b = world.load(first), world.load(again)
  rel = np.abs(b - a) / np.maximum(a, 1e-12)
  er = [nll.excess_risk(world.rate, p) for p in (a, b)]
  return {'models': [first, again], 'max_relative_prediction_difference': float(rel.max()),
          'mean_relative_prediction_difference': float(rel.mean()),
          'excess_risk': er, 'identical': bool(np.array_equal(a, b))}


def build(world_dirs: Sequence[str], recipes: Sequence[str], seeds: Sequence[int],
          aa_seeds: Sequence[int], aa_recipe: str, repeat: str = '') -> Dict:
  """Every figure of the quality table, with CIs, as a JSON-able dict.

  `repeat` names a model of the first world trained again with the same seed as
  `<aa_recipe>-s<seeds[0]>` (its float predictions are compared).
  """
  worlds = [World(d) for d in world_dirs]
  scorer = Scorer(worlds, seeds)
  students = [r + v for r in recipes for v in ('', INT8)]
  models = list(REFERENCES) + students
  result = {
      'scoring_clicks': [int(len(w.y)) for w in worlds],
      'slice_clicks': {s: [int(w.masks[s].sum()) for w in worlds] for s in SLICES},
      'models': {}, 'vs_production': {}, 'vs_offset': {}, 'int8_vs_float': {},
  }
  for m in models:
    result['models'][m] = {s: scorer.absolute(m, s) for s in SLICES}
    if 'production' in recipes:
      for s in SLICES:
        result['models'][m][s]['gap_closed'] = scorer.gap_closed(m, s)
  for ref in ('production', 'offset'):
    if ref not in recipes:
      continue
    for m in models:
      if m != ref:
        result[f'vs_{ref}'][m] = {s: scorer.paired(m, ref, s) for s in SLICES}
  # The issue-14 target: the default KD student against the best teacher-free
  # student (lowest mean excess risk overall). Picking the best on the same
  # scoring clicks favours the baseline, so the comparison errs against KD.
  free = [r for r in TEACHER_FREE if r in recipes]
  if DEFAULT_RECIPE in recipes and free:
    best = min(free, key=lambda r: result['models'][r]['overall']['excess_risk']['mean'])
    result['vs_best_teacher_free'] = {
        'reference': best,
        **{s: scorer.paired(DEFAULT_RECIPE, best, s) for s in SLICES}}
  # The tabular peer against every student.
  result['vs_lgbm'] = {m: {s: scorer.paired(m, 'lgbm', s) for s in SLICES}
                       for m in students}
  for r in recipes:
    result['int8_vs_float'][r] = {s: scorer.paired(r + INT8, r, s) for s in SLICES}
  if aa_seeds and aa_recipe in recipes:
    result['aa'] = {
        'recipe': aa_recipe, 'seeds': list(seeds), 'other_seeds': list(aa_seeds),
        **{s: scorer.paired(aa_recipe, aa_recipe, s, seeds=aa_seeds,
                            reference_seeds=seeds) for s in SLICES}}
  result['teacher_calibration'] = teacher_calibration(worlds)
  result['calibration_by_slice'] = calibration_by_slice(
      worlds, [m for m in CALIBRATION_MODELS if m in recipes or m in REFERENCES],
      seeds)
  if repeat:
    result['reproducibility'] = reproducibility(
        worlds[0], f'{aa_recipe}-s{seeds[0]}-float', f'{repeat}-float')
  return result


def _pct(ci: Dict) -> str:
  lo, hi = ci['ci95']
  return f'{100 * ci["mean"]:+.2f}% [{100 * lo:+.2f}, {100 * hi:+.2f}]'


def _num(ci: Dict, digits: int = 5) -> str:
  return f'{ci["mean"]:.{digits}f}'


def label(model: str) -> str:
  if model.endswith(INT8):
    return LABELS[model[:-len(INT8)]] + ', INT8'
  return LABELS[model]


def _vs(result: Dict, model: str, ref: str, slice_name: str,
        metric: str = 'excess_risk') -> str:
  d = result.get(f'vs_{ref}', {}).get(model)
  return _pct(d[slice_name][metric]) if d else ''



def _calibration_markdown(result: Dict) -> List[str]:
  """Calibration by where observability varies, before any KD number (absent
  from results made before the observability world)."""
  cal = result.get('calibration_by_slice')
  if not cal:
    return []
  models = list(cal)
  lines = ['**Calibration by slice** (sum of pConvs / sum of true rates, mean [95% CI] '
           'over worlds): where observability varies and a per-browser prior cannot '
           'follow it.', '',
           '| slice | ' + ' | '.join(label(m) for m in models) + ' |',
           '|---|' + '---:|' * len(models)]
  first = cal[models[0]]
  for group, values in first.items():
    for value in values:
      cells = []
      for m in models:
        ci = cal[m][group][value]
        cells.append(f'{ci["mean"]:.3f} [{ci["ci95"][0]:.3f}, {ci["ci95"][1]:.3f}]')
      lines.append(f'| {group}: {value} | ' + ' | '.join(cells) + ' |')
  return lines + ['']


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md quality tables, generated from the JSON."""
  size = result['size']
  models = [m for m in result['models'] if m != 'floor' and
            (not m.endswith(INT8) or m == DEFAULT_RECIPE + INT8)]
  floor_nll = result['models']['floor']['overall']['nll']['mean']
  lines = [
      f'{len(result["world_seeds"])} worlds (seeds {result["world_seeds"][0]}-'
      f'{result["world_seeds"][-1]}, {size["clicks"]:,} clicks each) x '
      f'{len(result["training_seeds"])} training seeds per recipe, paired; each world '
      f'scored on {result["scoring_clicks"][0]:,} new clicks of that world '
      f'({int(np.mean(result["slice_clicks"]["tcpa_gt_250"])):,} with tCPA > 250, '
      f'{int(np.mean(result["slice_clicks"]["low_observability"])):,} on '
      'low-observability browsers, on average). **Excess risk**: expected Poisson '
      'NLL per click above the Bayes floor, in closed form from the true rates '
      f'(the floor\'s NLL is {floor_nll:.5f}); lower is better. Changes are relative '
      'and paired, mean [95% CI] over worlds, each world pooling its seeds and '
      'clicks. **Gap closed**: the share of the production recipe\'s excess risk '
      'above the serving-only floor that a model removes. **Recalibrated**: excess '
      'risk after scaling pConvs by one global factor, so ranking is seen apart '
      'from bias.', '', *_calibration_markdown(result),
      '| model | NLL | excess risk | vs production | vs offset student | vs LightGBM | '
      'gap closed | calibration | recalibrated |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for m in models:
    row = result['models'][m]['overall']
    gap = row.get('gap_closed')
    lines.append(
        f'| {label(m)} | {_num(row["nll"])} | {_num(row["excess_risk"])} | '
        f'{_vs(result, m, "production", "overall")} | '
        f'{_vs(result, m, "offset", "overall")} | {_vs(result, m, "lgbm", "overall")} | '
        f'{_pct(gap) if gap else ""} | '
        f'{row["calibration"]["mean"]:.3f} | {_num(row["recalibrated_excess_risk"])} |')
  best = result.get('vs_best_teacher_free')
  if best:
    lines += ['', f'**{label(DEFAULT_RECIPE)} vs the best teacher-free student** '
              f'({label(best["reference"])}), excess risk: '
              f'{_pct(best["overall"]["excess_risk"])} overall, '
              f'{_pct(best["tcpa_gt_250"]["excess_risk"])} on tCPA > 250, '
              f'{_pct(best["low_observability"]["excess_risk"])} on low observability.']
  lines += ['', 'Excess risk by slice, change vs the production recipe and vs the '
            'offset student:', '',
            '| model | tCPA > 250 vs production | tCPA > 250 vs offset | '
            'tCPA > 250 vs LightGBM | low obs. vs production | low obs. vs offset |',
            '|---|---:|---:|---:|---:|---:|']
  for m in models:
    lines.append(f'| {label(m)} | {_vs(result, m, "production", "tcpa_gt_250")} | '
                 f'{_vs(result, m, "offset", "tcpa_gt_250")} | '
                 f'{_vs(result, m, "lgbm", "tcpa_gt_250")} | '
                 f'{_vs(result, m, "production", "low_observability")} | '
                 f'{_vs(result, m, "offset", "low_observability")} |')
  lines += ['', 'The INT8 model the pipeline would push against its float student '
            '(excess risk, paired):', '',
            '| recipe | overall | tCPA > 250 | low obs. |', '|---|---:|---:|---:|']
  for r, d in result['int8_vs_float'].items():
    lines.append(f'| {LABELS[r]} | {_pct(d["overall"]["excess_risk"])} | '
                 f'{_pct(d["tcpa_gt_250"]["excess_risk"])} | '
                 f'{_pct(d["low_observability"]["excess_risk"])} |')
  if 'aa' in result:
    aa = result['aa']
    lines += ['', f'**A/A**: {label(aa["recipe"])} under seeds {aa["other_seeds"]} vs '
              f'{aa["seeds"]}: excess risk {_pct(aa["overall"]["excess_risk"])} overall, '
              f'{_pct(aa["tcpa_gt_250"]["excess_risk"])} on tCPA > 250, '
              f'{_pct(aa["low_observability"]["excess_risk"])} on low observability; '
              f'NLL {_pct(aa["overall"]["nll"])}.']
  rep = result.get('reproducibility')
  if rep:
    lines += ['', '**Reproducibility**: the same command trained ' + (
        'identical models' if rep['identical'] else
        'models whose predictions differ by '
        f'{100 * rep["mean_relative_prediction_difference"]:.3f}% on average (at most '
        f'{100 * rep["max_relative_prediction_difference"]:.2f}%)') +
        f' ({rep["models"][0]} twice, first world).']
  cal = result['teacher_calibration']['mean']
  lines += ['', '**Teacher calibration** (sum of predicted / true rate) per delay '
            'window on the scoring clicks, mean over worlds [95% CI]: ' + ', '.join(
                f'{k} {v["mean"]:.3f} [{v["ci95"][0]:.3f}, {v["ci95"][1]:.3f}]'
                for k, v in cal.items()) + '.']
  obs = [w['teacher_observability'] for w in result.get('worlds', [])
         if 'teacher_observability' in w]
  if obs:
    lines += [''] + observability_table(obs)
  fits = [w['teacher_fit'] for w in result.get('worlds', []) if 'teacher_fit' in w]
  if fits:
    lines += ['', 'Where it comes from, on the clicks the teacher trained on (per '
              'world, in world order): reported conversions per window, the '
              'teacher against them (fit), and they against their expectation '
              '(label noise):', '',
              '| window | conversions | fit to labels | labels vs truth | '
              'calibration |', '|---|---:|---:|---:|---:|']
    for name in fits[0]:
      cells = [', '.join(f'{f[name][k]:{fmt}}' for f in fits) for k, fmt in (
          ('conversions', ',d'), ('fit_to_labels', '.3f'),
          ('labels_vs_truth', '.3f'), ('calibration', '.3f'))]
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def heterogeneity_markdown(results: Dict[str, Dict]) -> str:
  """The docs/benchmarks.md table across the observability world's heterogeneity
  levels (issue 14, deliverable 8): per level, the teacher-free baselines and the
  default KD student, paired excess-risk changes with 95% CIs over worlds, the
  gap KD closes, and the teacher's observability error against the prior's.

  Args:
    results: heterogeneity (as written in the file name) -> quality result.
  """
  lines = ['Excess risk, relative and paired, mean [95% CI over worlds]; the '
           'observability world at each heterogeneity h with a 3% panel (details per '
           'level below). "Best teacher-free" is the teacher-free student with the '
           'lowest excess risk at that level.', '',
           '| h | worlds x seeds | offset vs production | panel-calibrated offset vs '
           'offset | own observability head vs offset | KD vs offset | KD vs best '
           'teacher-free, overall | KD vs best teacher-free, tCPA > 250 | KD gap '
           'closed | teacher observability RMSE / prior\'s | teacher\'s offsets | '
           'commit |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|']
  for h, r in sorted(results.items(), key=lambda kv: float(kv[0])):
    best = r.get('vs_best_teacher_free')
    obs = [w['teacher_observability']['overall']['all clicks']
           for w in r.get('worlds', []) if 'teacher_observability' in w]
    if obs and all('teacher_rmse' in o for o in obs):
      if min(o['prior_rmse'] for o in obs) < 1e-9:
        # h = 0: the prior is the world's observability, nothing to beat.
        obs_cell = (f'prior exact; teacher RMSE '
                    f'{np.mean([o["teacher_rmse"] for o in obs]):.4f}')
      else:
        ratio = stats.interval([o['teacher_rmse'] / o['prior_rmse'] for o in obs])
        obs_cell = f'{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]'
    else:
      obs_cell = 'not measured'
    gap = r['models'].get(DEFAULT_RECIPE, {}).get('overall', {}).get('gap_closed')
    lines.append(
        f'| {h} | {len(r["world_seeds"])} x {len(r["training_seeds"])} | '
        f'{_vs(r, "offset", "production", "overall")} | '
        f'{_vs(r, "offset_panel", "offset", "overall")} | '
        f'{_vs(r, "offset_obs_head", "offset", "overall")} | '
        f'{_vs(r, DEFAULT_RECIPE, "offset", "overall")} | ' + (
            f'{_pct(best["overall"]["excess_risk"])} ({best["reference"]}) | '
            f'{_pct(best["tcpa_gt_250"]["excess_risk"])} | ' if best else ' | | ') +
        f'{_pct(gap) if gap else ""} | {obs_cell} | {teacher_offsets(r)} | '
        f'{r.get("git_sha", "")[:7]} |')
  return '\n'.join(lines)


def teacher_offsets(result: Dict) -> str:
  """How the result's teacher set its observed exposures (its config)."""
  model = result.get('config', {}).get('model', {})
  parts = ['panel-calibrated' if model.get('teacher_panel_calibration') else 'prior']
  if model.get('teacher_observability_head'):
    parts.append('head')
  return ' + '.join(parts)


def load(path: str) -> Optional[Dict]:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
