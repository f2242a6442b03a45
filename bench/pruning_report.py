"""The pruning benchmark's docs/benchmarks.md table, from its JSON (no TensorFlow:
bench/readme.py renders it). bench/pruning_bench.py measures."""

from typing import Dict

SPARSITIES = (0.0, 0.3, 0.5, 0.7)
BATCHES = (1, 256)
MODES = ('invoke', 'per_request')


def key(sparsity: float) -> str:
  return f'{round(100 * sparsity)}%'


def _ci(point: Dict, scale: float = 100.0, digits: int = 4) -> str:
  lo, hi = point['ci95']
  return (f'{scale * point["mean"]:+.{digits}f}% [{scale * lo:+.{digits}f}, '
          f'{scale * hi:+.{digits}f}]')


def _ratio(point: Dict) -> str:
  lo, hi = point['ci95']
  return f'{point["ratio"]:.2f} [{lo:.2f}, {hi:.2f}]'


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md pruning tables from the JSON."""
  lines = []
  if result.get('quick'):
    lines += ['**Quick mode** (development size; not the committed benchmark).', '']
  q = result['quality']
  seeds = result['seeds']
  lines += [
      f'INT8 student (`{result["student"]}`, seeds {", ".join(map(str, seeds))}) per '
      f'target sparsity of the hidden Dense layers, git {result["git_sha"][:7]}, '
      f'{result["machine"]["cpus"]} cores. Sizes and zeros are seed '
      f'{seeds[0]}\'s model; the NLL change is vs sparsity 0 on {q["clicks"]:,} new '
      'clicks of the benchmark world, paired over clicks and seeds [95% CI, click '
      'level]; latency is one thread, default delegates (XNNPACK), '
      f'{result["samples"]:,} timings per point.', '',
      '| sparsity | zeros in dense_0, dense_1: float / int8 | bytes | gzip bytes | gzip vs 0% '
      '| Poisson NLL (INT8) | NLL vs 0% | seed SD of the change |',
      '|---|---:|---:|---:|---:|---:|---:|---:|']
  base_gz = result['models'][key(0.0)]['gzip_bytes']
  for s in result['sparsities']:
    k = key(s)
    m = result['models'][k]
    zeros = ' / '.join(
        ', '.join(f'{100 * z:.1f}%' for z in m[f'{kind}_hidden_zeros'])
        for kind in ('float', 'int8'))
    change = q['vs_sparsity_0'].get(k)
    vs = (f'{_ci(change)} | {100 * change["seed_sd"]:.4f}%' if change else ' | ')
    lines.append(f'| {k} | {zeros} | {m["bytes"]:,} | {m["gzip_bytes"]:,} | '
                 f'{m["gzip_bytes"] / base_gz:.3f}x | {q["nll"][k]:.5f} | {vs} |')
  lines += ['', 'Latency, one thread: p50 / p99.9 in microseconds, and the p50 and '
            'p99.9 ratios to sparsity 0 [95% bootstrap CI].', '',
            '| sparsity | mode | ' + ' | '.join(
                f'batch {b} | p50 / p99.9 vs 0% (batch {b})' for b in BATCHES) + ' |',
            '|---|---|' + '---:|---:|' * len(BATCHES)]
  for s in result['sparsities']:
    k = key(s)
    for mode in MODES:
      cells = []
      for b in BATCHES:
        p = result['latency'][k][str(b)][mode]
        cells.append(f'{p["p50"]["us"]:,.1f} / {p["p99.9"]["us"]:,.1f}')
        r = result['ratios'].get(k)
        cells.append(f'{_ratio(r[str(b)][mode]["p50"])} / '
                     f'{_ratio(r[str(b)][mode]["p99.9"])}' if r else '')
      lines.append(f'| {k} | {mode.replace("_", " ")} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)
