"""World benchmark: generator throughput and peak memory; the world's difficulty.

  python -m bench.world_bench [--sizes 100000 1000000] [--difficulty-clicks 500000]

Each generator run is a fresh process, so its peak RSS is its own (TensorFlow's
import included). Difficulty (world/difficulty.py) is measured on a default world
of `--difficulty-clicks` clicks. Results go to bench/results/world.json with the
seed, config and git SHA, and a Markdown table is printed (not committed: docs/benchmarks.md quotes none of it).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from bench import common
import config as config_lib
from schemas import layout
from schemas import records
from world import difficulty
from world import generator


def _measure_child(num_clicks: int, out: str) -> None:
  """Runs in the child: generate, then print seconds and this process's peak RSS."""
  cfg = config_lib.load_config(None, [f'world.num_clicks={num_clicks}'])
  t0 = time.time()
  manifest = generator.generate(cfg, out, log=lambda *_: None)
  seconds = time.time() - t0
  print(json.dumps({
      'clicks': num_clicks,
      'seconds': seconds,
      'rows_per_second': num_clicks / seconds,
      'reported_conversions': manifest['counts']['logged_conversions'],
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }))


def throughput(sizes):
  rows = []
  for n in sizes:
    with tempfile.TemporaryDirectory() as tmp:
      out = subprocess.run(
          [sys.executable, '-m', 'bench.world_bench', '--_child', str(n),
           os.path.join(tmp, 'w')], check=True, capture_output=True, text=True)
    rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f'generated {n} clicks: {rows[-1]["rows_per_second"]:.0f} rows/s, '
          f'peak {rows[-1]["peak_rss_mb"]:.0f} MB', flush=True)
  return rows


def difficulty_at(num_clicks: int, seed: int):
  cfg = config_lib.load_config(None, [f'world.num_clicks={num_clicks}',
                                      f'world.seed={seed}'])
  with tempfile.TemporaryDirectory() as tmp:
    generator.generate(cfg, os.path.join(tmp, 'w'), log=lambda *_: None)
    clicks = records.read_examples(os.path.join(tmp, 'w', layout.CLICKS))
  return cfg, difficulty.measure(clicks, cfg.dataset)


def markdown(result) -> str:
  lines = ['| clicks | seconds | rows/s | peak RSS (MB) |', '|---:|---:|---:|---:|']
  for r in result['throughput']:
    lines.append(f'| {r["clicks"]:,} | {r["seconds"]:.1f} | '
                 f'{r["rows_per_second"]:,.0f} | {r["peak_rss_mb"]:,.0f} |')
  d = result['difficulty']
  lines += ['', f'Difficulty on {result["difficulty_clicks"]:,} clicks '
            f'(NLL per click on {int(d["test_clicks"]):,} held-out clicks):', '',
            '| model | Poisson NLL | vs floor |', '|---|---:|---:|']
  for key, name in [('floor', 'Bayes floor (true rate)'),
                    ('glm_with_teacher_only', 'GLM, serving + teacher-only'),
                    ('glm_serving', 'GLM, serving features'),
                    ('constant', 'constant rate')]:
    lines.append(f'| {name} | {d[key]:.5f} | {100 * (d[key] / d["floor"] - 1):+.2f}% |')
  lines += ['', f'The teacher-only features close {100 * d["privileged_share"]:.0f}% '
            'of the serving GLM\'s gap to the floor.']
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m bench.world_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', type=int, nargs='+', default=[100_000, 1_000_000, 3_000_000])
  parser.add_argument('--difficulty-clicks', type=int, default=500_000)
  parser.add_argument('--seed', type=int, default=42)
  parser.add_argument('--out', default='bench/results/world.json')
  parser.add_argument('--_child', nargs=2, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args._child:  # pylint: disable=protected-access
    _measure_child(int(args._child[0]), args._child[1])  # pylint: disable=protected-access
    return 0
  rows = throughput(args.sizes)
  cfg, diff = difficulty_at(args.difficulty_clicks, args.seed)
  result = {**common.provenance(cfg), 'throughput': rows,
            'difficulty_clicks': args.difficulty_clicks, 'difficulty': diff}
  common.write_json(args.out, result)
  print(markdown(result))
  return 0


if __name__ == '__main__':
  sys.exit(main())
