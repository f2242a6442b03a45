"""Writes the README's benchmark tables from the committed JSON, so they cannot drift.

  python -m bench.readme [--check]

Each table sits between `<!-- <name>:begin -->` and `<!-- <name>:end -->` markers
in README.md and is generated from bench/reported/<name>.json. `--check` exits 1
(and names the table) when the README differs from what the JSON gives.
"""

import argparse
import os
import re
import sys
from typing import Callable, Dict

from bench import fallback_bench
from bench import promotion_bench
from bench import pruning_report
from bench import quality_report
from bench import serving_report
from bench import sweep_report

README = 'README.md'
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
REPORTED = 'bench/reported'


def _load(path):
  """A table's input: one JSON, or for a pattern {group: JSON} of the files in
  bench/reported/ it matches (None when there are none)."""
  if isinstance(path, str):
    return quality_report.load(path)
  found = {}
  for name in sorted(os.listdir(REPORTED)):
    m = path.fullmatch(name)
    if m:
      found[m.group(1)] = quality_report.load(os.path.join(REPORTED, name))
  return found or None


def block(name: str, body: str) -> str:
  return f'<!-- {name}:begin -->\n{body}\n<!-- {name}:end -->'


def render(text: str, tables=None) -> str:
  """`text` with every table block regenerated from its JSON.

  Raises:
    ValueError: a table's markers are missing from the text.
  """
  for name, (path, fn) in (tables or TABLES).items():
    result = _load(path)
    if result is None:
      continue
    pattern = re.compile(rf'<!-- {name}:begin -->\n.*?\n<!-- {name}:end -->', re.S)
    if not pattern.search(text):
      raise ValueError(f'{README} has no <!-- {name}:begin --> ... end block')
    body = fn(result)
    text = pattern.sub(lambda _: block(name, body), text)
  return text


def main(argv=None, renderer: Callable[[str], str] = render) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.readme',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--check', action='store_true',
                      help='fail if README.md is not what the JSON gives')
  args = parser.parse_args(argv)
  with open(README) as f:
    text = f.read()
  new = renderer(text)
  if args.check:
    if new != text:
      print(f'{README} is out of date with bench/reported/: run python -m bench.readme',
            file=sys.stderr)
      return 1
    return 0
  with open(README, 'w') as f:
    f.write(new)
  print(f'wrote the benchmark tables of {README}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
