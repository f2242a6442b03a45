"""The sweep benchmark's docs/benchmarks.md table (bench/sweep_bench.py writes the JSON)."""

from typing import Dict

REPORTED = 'bench/reported/sweep.json'


def _fmt(v) -> str:
  return f'{v:g}' if isinstance(v, (int, float)) else str(v)


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md table (bench/readme.py) from bench/reported/sweep.json."""
  size, sel = result['size'], result['selection']
  dims = list(result['search_space'])
  lines = [
      f'Sweep of {size["trials"]} {size["algorithm"]} trials on world '
      f'{size["selection_world"]} ({size["clicks"]:,} clicks, teacher '
      f'{size["teacher_steps"]} steps, tune split {size["tune_fraction"]:.0%} of the '
      f'train window, scored in `{result["tune_score_mode"]}` mode), git '
      f'{result["provenance"].get("git_sha", "?")[:7]}, 2 shared cores. Excess risk '
      f'is against the true rates on {size["scoring_clicks"]:,} new clicks '
      '(selection never sees it).',
      '',
      '| trial | ' + ' | '.join(dims) + ' | tune NLL | training loss | excess risk |',
      '|---|' + '---:|' * (len(dims) + 3),
  ]
  for t in sorted(result['trials'], key=lambda t: t['tune_nll']):
    mark = ' (chosen)' if t['trial_id'] == sel['selected_trial'] else ''
    lines.append(f'| {t["trial_id"]}{mark} | ' + ' | '.join(
        _fmt(t[d]) for d in dims) + f' | {t["tune_nll"]:.5f} | '
        f'{t["train_loss"]:.5f} | {t["excess_risk"]:.5f} |')
  rho = sel['spearman_tune_vs_excess_risk']
  lines += [
      '',
      f'Rank correlation of tune NLL and excess risk: '
      f'{"n/a" if rho is None else f"{rho:+.2f}"}; the tune-selected trial '
      f'{sel["selected_trial"]}, the truth\'s best {sel["truth_best_trial"]} (regret '
      f'{sel["regret_excess_risk"]:.5f}); selecting on training loss would pick trial '
      f'{sel["train_loss_best_trial"]} (regret '
      f'{sel["regret_of_train_loss_selection"]:.5f}).',
      '',
  ]
  c = result.get('chosen_vs_defaults_excess_risk')
  if c is None:
    lines.append('Chosen vs defaults on unseen worlds: not measured in this run.')
    return '\n'.join(lines)
  if c['worlds'] > 1:
    lo, hi = c['ci95']
    ci = f'95% CI over worlds {lo:+.1%}, {hi:+.1%}'
  else:
    # One world: no interval over worlds; the click-level one (delta method).
    se = c['per_world'][0]['click_se']
    ci = (f'one world, no CI over worlds; click-level 95% CI '
          f'{c["mean"] - 1.96 * se:+.1%}, {c["mean"] + 1.96 * se:+.1%}')
  lines += [
      f'Chosen vs defaults on {c["worlds"]} unseen world(s) x '
      f'{size["training_seeds"]} training seed(s), paired: excess risk '
      f'{c["mean"]:+.1%} [{ci}] (negative: the chosen values are better).',
      '',
      '| world | defaults: excess risk | chosen: excess risk |',
      '|---|---:|---:|',
  ]
  for w in result['per_world']:
    lines.append(f'| {w["world_seed"]} | {w["default_excess_risk"]:.5f} | '
                 f'{w["chosen_excess_risk"]:.5f} |')
  return '\n'.join(lines)
