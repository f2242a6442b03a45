"""Writes the generated blocks of README.md and docs/ from their sources, so they cannot drift.

  python -m bench.readme [--check]

Each block sits between `<!-- <name>:begin -->` and `<!-- <name>:end -->` markers
in one of the documents of DOCS:

- docs/benchmarks.md: every benchmark table (TABLES), from bench/reported/<name>.json;
  a benchmark whose JSON is not there yet gets a one-line note naming its make target;
- README.md: the headline figures, from the same JSON (`headline`);
- docs/configuration.md: every configuration key, from config/schema.py and
  pipeline/configs/default.yaml (config/reference.py).

`--check` writes nothing and exits 1, naming each file and block that differs from
what its source gives.
"""

import argparse
import os
import re
import sys
from typing import Callable, Dict, List, Optional

from bench import fallback_bench
from bench import promotion_bench
from bench import pruning_report
from bench import quality_report
from bench import serving_report
from bench import sweep_report
from config import reference
from config import schema

README = 'README.md'
BENCHMARKS = 'docs/benchmarks.md'
CONFIGURATION = 'docs/configuration.md'
REPORTED = 'bench/reported'

# table name -> (its JSON, the function rendering it)
TABLES: Dict[str, tuple] = {
    'quality': ('bench/reported/quality.json', quality_report.markdown),
    'serving': ('bench/reported/serving.json', serving_report.markdown),
    'observability_pilot': ('bench/reported/observability_pilot_h1.json',
                            quality_report.markdown),
    'pruning': ('bench/reported/pruning.json', pruning_report.markdown),
    # One table across the heterogeneity levels: every file the pattern matches,
    # keyed by its group (h).
    'observability_levels': (re.compile(r'observability_pilot_h([0-9.]+)\.json'),
                             quality_report.heterogeneity_markdown),
    'fallback': ('bench/reported/fallback.json', fallback_bench.markdown),
    'sweep': (sweep_report.REPORTED, sweep_report.markdown),
    'promotion': (promotion_bench.OUT, promotion_bench.markdown),
}
# What writes each table's JSON: named in the block while the JSON is missing.
TARGETS = {
    'quality': 'make bench-quality',
    'serving': 'make bench-serving',
    'observability_pilot': 'make bench-observability H=1 WORLDS=5',
    'pruning': 'make bench-pruning',
    'observability_levels': 'make bench-observability H=<h> WORLDS=5',
    'fallback': 'make bench-fallback',
    'sweep': 'make bench-sweep',
    'promotion': 'make bench-promotion',
    'headline': 'make bench-quality',
}


# --- The README's headline ---------------------------------------------------


def _world(result: Dict) -> tuple:
  """(observability heterogeneity, panel share) of a result's world (a key
  missing from an older result's config is the schema's default)."""
  world = result.get('config', {}).get('world', {})
  d = schema.WorldConfig()
  return (float(world.get('observability_heterogeneity', d.observability_heterogeneity)),
          float(world.get('panel_share', d.panel_share)))


def _default_world(overrides: Dict) -> tuple:
  d = schema.WorldConfig()
  return (float(overrides.get('world.observability_heterogeneity',
                              d.observability_heterogeneity)),
          float(overrides.get('world.panel_share', d.panel_share)))


def _describe(world: tuple) -> tuple:
  """(the world's name, its figures)."""
  h, panel = world
  name = 'per-browser world' if h == 0 and panel == 0 else 'observability world'
  share = f'a {100 * panel:g}% panel' if panel else 'no panel'
  return name, f'heterogeneity {h:g}, {share}'


def _whose(result: Dict, default: tuple) -> str:
  name, figures = _describe(_world(result))
  if _world(result) == default:
    return f'the default world, the {name} ({figures})'
  default_name, default_figures = _describe(default)
  return (f'the {name} ({figures}); the default world is the {default_name} '
          f'({default_figures})')


def _excess(result: Dict, ref: str, slice_name: str = 'overall') -> str:
  d = result[f'vs_{ref}']
  d = d if ref == 'best_teacher_free' else d[quality_report.DEFAULT_RECIPE]
  d = d[slice_name]['excess_risk']
  lo, hi = d['ci95']
  return f'{100 * d["mean"]:+.1f}% [{100 * lo:+.1f}, {100 * hi:+.1f}]'


def _size(result: Dict) -> str:
  worlds = len(result['world_seeds'])
  seeds = len(result['training_seeds'])
  return f'{worlds} worlds x {seeds} training seed{"" if seeds == 1 else "s"}'


def headline(results: Dict[str, Optional[Dict]], overrides: Optional[Dict] = None) -> str:
  """The README's status figures: a handful, each from its committed JSON."""
  default = _default_world(reference.default_overrides() if overrides is None
                           else overrides)
  lines = []
  q = results.get('quality')
  if q is None:
    lines.append('- Student quality: not yet run: make bench-quality.')
  else:
    lines.append(
        f'- **Student quality** ([`make bench-quality`](docs/benchmarks.md#student-quality)'
        f', {_size(q)} on {_whose(q, default)}): the default distilled student\'s '
        'excess risk over the Bayes floor, paired, mean [95% CI over worlds], is '
        f'{_excess(q, "production")} against the production recipe, '
        f'{_excess(q, "offset")} against the observability-offset student without a '
        f'teacher and {_excess(q, "lgbm")} against LightGBM; on tCPA > 250, '
        f'{_excess(q, "offset", "tcpa_gt_250")} against the offset student.')
  o = results.get('observability_pilot')
  if o is not None and o.get('vs_best_teacher_free'):
    best = o['vs_best_teacher_free']
    lines.append(
        f'- **Against the best teacher-free student** '
        f'([observability world](docs/benchmarks.md#the-observability-world), {_size(o)} '
        f'on {_whose(o, default)}): the default distilled student\'s excess risk is '
        f'{_excess(o, "best_teacher_free")} overall and '
        f'{_excess(o, "best_teacher_free", "tcpa_gt_250")} on tCPA > 250 against '
        f'{quality_report.label(best["reference"]).replace("student: ", "the student with ")}.')
  s = results.get('serving')
  if s is not None:
    t = s['targets']
    lines.append(
        f'- **Serving** ([`make bench-serving`](docs/benchmarks.md#serving-latency), on '
        f'{_whose(s, default)}): '
        f'the INT8 student is {t["size_ratio"]:.3f}x the float32 TFLite\'s bytes, '
        f'{t["ops_after"]} ops, its Poisson NLL {100 * t["nll_cost"]:+.4f}% against the '
        'float SavedModel, its p50 per request at batch 256 '
        f'{t["int8_vs_float32_p50_batch_256"]:.2f}x the float32 TFLite\'s.')
  p = results.get('promotion')
  if p is None:
    lines.append('- Promotion power: not yet run: make bench-promotion.')
  else:
    at = [r for r in p['results'] if r['eval_days'] == p['default_eval_days']]

    def share(pick):
      cells = [r['promoted']['2_of_3']['share'] for r in at if pick(r['true_change'])]
      return f'{min(cells):.0%}-{max(cells):.0%}' if cells else 'n/a'
    lines.append(
        f'- **Promotion power** ([`make bench-promotion`](docs/benchmarks.md#promotion-power)'
        f', {at[0]["nights"]} simulated nights of the default world at the default '
        f'{p["default_eval_days"]} eval days, {at[0]["eval_clicks"]:,} clicks): the default '
        f'rule (`2_of_3` on a recipe change) promotes a candidate truly at least 5% better on '
        f'{share(lambda c: c <= -0.0499)} of nights, 3% better on '
        f'{share(lambda c: -0.0301 <= c <= -0.0299)}, and an equal or worse one on '
        f'{share(lambda c: c >= 0)}.')
  return '\n'.join(lines)


HEADLINE_SOURCES = {'quality': TABLES['quality'][0],
                    'observability_pilot': TABLES['observability_pilot'][0],
                    'serving': TABLES['serving'][0],
                    'promotion': TABLES['promotion'][0]}

# document -> {block name: (its source, the function rendering it)}
DOCS: Dict[str, Dict[str, tuple]] = {
    README: {'headline': (HEADLINE_SOURCES, headline)},
    BENCHMARKS: TABLES,
    CONFIGURATION: {'configuration': (reference.default_overrides, reference.markdown)},
}


# --- Rendering ---------------------------------------------------------------


def _load(source):
  """A block's input: a JSON path (None when absent); for a pattern, {group: JSON}
  of the files in bench/reported/ it matches (None when there are none); for a
  dict, {name: JSON or None}; a callable's result."""
  if isinstance(source, str):
    return quality_report.load(source)
  if isinstance(source, dict):
    return {name: _load(path) for name, path in source.items()}
  if callable(source) and not isinstance(source, re.Pattern):
    return source()
  found = {}
  for name in sorted(os.listdir(REPORTED)):
    m = source.fullmatch(name)
    if m:
      found[m.group(1)] = quality_report.load(os.path.join(REPORTED, name))
  return found or None


def block(name: str, body: str) -> str:
  return f'<!-- {name}:begin -->\n{body}\n<!-- {name}:end -->'


def not_yet_run(name: str) -> str:
  return f'Not yet run: {TARGETS.get(name, "make bench")}.'


def _pattern(name: str):
  return re.compile(rf'<!-- {name}:begin -->\n(?:.*?\n)?<!-- {name}:end -->', re.S)


def _bodies(tables) -> Dict[str, str]:
  out = {}
  for name, (source, fn) in tables.items():
    result = _load(source)
    out[name] = not_yet_run(name) if result is None else fn(result)
  return out


def render(text: str, tables=None, doc: str = BENCHMARKS) -> str:
  """`text` with every block of `tables` regenerated from its source.

  Raises:
    ValueError: a block's markers are missing from the text (naming `doc`).
  """
  for name, body in _bodies(tables or TABLES).items():
    pattern = _pattern(name)
    if not pattern.search(text):
      raise ValueError(f'{doc} has no <!-- {name}:begin --> ... end block')
    text = pattern.sub(lambda _, n=name, b=body: block(n, b), text)
  return text


def stale(text: str, tables, doc: str) -> List[str]:
  """The blocks of `text` that differ from what their sources give (a missing
  block counts)."""
  out = []
  for name, body in _bodies(tables).items():
    m = _pattern(name).search(text)
    if m is None or m.group(0) != block(name, body):
      out.append(name)
  return out


def main(argv=None, docs: Optional[Dict[str, Dict[str, tuple]]] = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.readme',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--check', action='store_true',
                      help='write nothing; fail, naming the file and block, where a '
                           'document differs from its source')
  args = parser.parse_args(argv)
  docs = DOCS if docs is None else docs
  failed = []
  for path, tables in docs.items():
    with open(path) as f:
      text = f.read()
    if args.check:
      failed += [(path, name) for name in stale(text, tables, path)]
      continue
    new = render(text, tables, path)
    if new != text:
      with open(path, 'w') as f:
        f.write(new)
      print(f'wrote the generated blocks of {path}')
  for path, name in failed:
    print(f'{path}: block <!-- {name}:begin --> is out of date with its source '
          '(run python -m bench.readme)', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
