"""The serving benchmark's targets and docs/benchmarks.md tables, from its JSON (no
TensorFlow: bench/readme.py renders them). bench/serving_bench.py measures."""

from typing import Dict

BATCHES = (1, 16, 64, 256, 1024)
MODES = ('invoke', 'per_request')
QUANTILES = {'p50': 0.5, 'p99': 0.99, 'p99.9': 0.999}
# Model keys, in table order.
SAVED_MODEL = 'float_saved_model'
FLOAT32 = 'float32_tflite'
DYNAMIC = 'dynamic_range_tflite'
INT8 = 'int8_tflite'
TEACHER = 'teacher_float32_tflite'
LABELS = {SAVED_MODEL: 'float SavedModel (tf.Example in)',
          FLOAT32: 'float32 TFLite', DYNAMIC: 'dynamic range TFLite',
          INT8: 'INT8 TFLite', TEACHER: 'teacher, float32 TFLite'}
# Targets of issue 18 (checked here, never in timed tests).
TARGETS = {'int8_vs_float32_p999_batch_64_256': 0.5, 'int8_vs_float32_p999_batch_1': 1.0,
           'size_ratio': 0.30, 'int8_vs_teacher_batch_256': 0.2,
           'nll_cost': 0.0005, 'ops_reduction': 3.0}
# Where serving_bench records the op count of the per-feature graph the lean
# one replaced (the 'before' of the ops target), measured on the student's
# architecture in the Quantizer's INT8 mode; absent from a JSON written before
# it was measured.
PER_FEATURE = 'per_feature_int8_tflite'


def targets(result: Dict) -> Dict:
  """The issue's targets on per-request latency with one thread (p99.9; p50
  beside them, which the machine's scheduling noise does not reach)."""
  r = result['ratios']['int8_vs_float32']['1']
  t = result['ratios']['int8_vs_teacher']['1']
  size = result['models'][INT8]['bytes'] / result['models'][FLOAT32]['bytes']
  cost = result['quality']['quantization_cost'][INT8]['mean']
  ops = result['models'][INT8]['op_count']
  before = (result.get(PER_FEATURE) or {}).get('op_count')  # None: not recorded
  out = {
      'int8_vs_float32_p999_batch_64': r['64']['per_request']['p99.9']['ratio'],
      'int8_vs_float32_p999_batch_256': r['256']['per_request']['p99.9']['ratio'],
      'int8_vs_float32_p999_batch_1': r['1']['per_request']['p99.9']['ratio'],
      'int8_vs_teacher_p999_batch_256': t['256']['per_request']['p99.9']['ratio'],
      'int8_vs_float32_p50_batch_64': r['64']['per_request']['p50']['ratio'],
      'int8_vs_float32_p50_batch_256': r['256']['per_request']['p50']['ratio'],
      'int8_vs_float32_p50_batch_1': r['1']['per_request']['p50']['ratio'],
      'int8_vs_teacher_p50_batch_256': t['256']['per_request']['p50']['ratio'],
      'size_ratio': size, 'nll_cost': cost, 'ops_before': before,
      'ops_after': ops, 'ops_reduction': before / ops if before else None,
  }
  out['met'] = {
      'latency_batch_64_256': max(out['int8_vs_float32_p999_batch_64'],
                                  out['int8_vs_float32_p999_batch_256']) <= TARGETS[
                                      'int8_vs_float32_p999_batch_64_256'],
      'latency_batch_1': out['int8_vs_float32_p999_batch_1'] <= TARGETS[
          'int8_vs_float32_p999_batch_1'],
      'size': size <= TARGETS['size_ratio'],
      'teacher': out['int8_vs_teacher_p999_batch_256'] <= TARGETS['int8_vs_teacher_batch_256'],
      'nll': abs(cost) <= TARGETS['nll_cost'],
      'ops': (None if out['ops_reduction'] is None else
              out['ops_reduction'] >= TARGETS['ops_reduction']),
  }
  return out


def _q(point: Dict, name: str) -> str:
  return f'{point[name]["us"]:,.1f}'


def _ratio(point: Dict, name: str) -> str:
  r = point[name]
  return f'{r["ratio"]:.2f} [{r["ci95"][0]:.2f}, {r["ci95"][1]:.2f}]'


def markdown(result: Dict) -> str:
  """The docs/benchmarks.md serving tables from the JSON."""
  lines = []
  if result.get('quick'):
    lines += ['**Quick mode** (development size: small models, few samples; not the '
              'committed benchmark).', '']
  q = result['quality']
  lines += [
      f'{result["samples"]:,} timings per point on {result["machine"]["cpus"]} cores, '
      f'git {result["git_sha"][:7]}; Poisson NLL on {q["clicks"]:,} new clicks of the '
      'benchmark world against their true conversions, change vs the float SavedModel '
      'paired over clicks [95% CI].', '',
      '| model | bytes | vs float32 | ops | Poisson NLL | vs float SavedModel |',
      '|---|---:|---:|---:|---:|---:|']
  f32 = result['models'][FLOAT32]['bytes']
  for key, label in LABELS.items():
    m = result['models'].get(key)
    size = (f'{m["bytes"]:,} | {m["bytes"] / f32:.3f}x | {m["op_count"]}' if m
            else ' | | ')
    vs = q['vs_float_saved_model'].get(key)
    change = (f'{100 * vs["mean"]:+.4f}% [{100 * vs["ci95"][0]:+.4f}, '
              f'{100 * vs["ci95"][1]:+.4f}]' if vs else '')
    lines.append(f'| {label} | {size} | {q["nll"][key]:.5f} | {change} |')
  for threads, title in (('1', 'one thread'), ('default', 'default threads')):
    for mode in MODES:
      lines += ['', f'Latency, {mode.replace("_", " ")}, {title}: p50 / p99 / p99.9 '
                'in microseconds.', '',
                '| model | ' + ' | '.join(f'batch {b}' for b in BATCHES) + ' |',
                '|---|' + '---:|' * len(BATCHES)]
      for key, label in LABELS.items():
        cells = []
        for b in BATCHES:
          p = result['latency'][key][threads][str(b)][mode]
          cells.append(f'{_q(p, "p50")} / {_q(p, "p99")} / {_q(p, "p99.9")}')
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
  lines += ['', 'Ratios of p50 and p99.9 [95% bootstrap CI]: INT8 over float32 TFLite '
            '(same graph), INT8 over the teacher (float32 TFLite).', '',
            '| threads | mode | ratio | ' + ' | '.join(f'batch {b}' for b in BATCHES)
            + ' |', '|---|---|---|' + '---:|' * len(BATCHES)]
  for threads in ('1', 'default'):
    for mode in MODES:
      for name, title in (('int8_vs_float32', 'INT8 / float32'),
                          ('int8_vs_teacher', 'INT8 / teacher')):
        for qn in ('p50', 'p99.9'):
          cells = [_ratio(result['ratios'][name][threads][str(b)][mode], qn)
                   for b in BATCHES]
          lines.append(f'| {threads} | {mode.replace("_", " ")} | {title} {qn} | '
                       + ' | '.join(cells) + ' |')
  # Recomputed from the recorded measurements (not the JSON's stored targets,
  # which an older run filled from a constant for the ops before).
  t = targets(result)
  met = lambda k: {True: 'met', False: 'missed', None: 'not checked'}[t['met'][k]]
  if t['ops_before']:
    ops = (f'>= 3x fewer ops: {t["ops_before"]} -> {t["ops_after"]} '
           f'({t["ops_reduction"]:.1f}x, {met("ops")})')
  else:
    ops = (f'>= 3x fewer ops: {t["ops_after"]} ops; the per-feature graph\'s count '
           f'not recorded in this result ({met("ops")})')
  lines += ['', 'Targets (per request, one thread): INT8 p99.9 <= 0.5x float32 TFLite '
            f'at batch 64 and 256: {t["int8_vs_float32_p999_batch_64"]:.2f}x and '
            f'{t["int8_vs_float32_p999_batch_256"]:.2f}x ({met("latency_batch_64_256")}); '
            f'no slower at batch 1: {t["int8_vs_float32_p999_batch_1"]:.2f}x '
            f'({met("latency_batch_1")}); at p50: {t["int8_vs_float32_p50_batch_64"]:.2f}x, '
            f'{t["int8_vs_float32_p50_batch_256"]:.2f}x and '
            f'{t["int8_vs_float32_p50_batch_1"]:.2f}x; size <= 0.30x: {t["size_ratio"]:.3f}x '
            f'({met("size")}); <= 0.2x the teacher at batch 256: '
            f'{t["int8_vs_teacher_p999_batch_256"]:.2f}x ({met("teacher")}; p50 '
            f'{t["int8_vs_teacher_p50_batch_256"]:.2f}x); NLL cost '
            f'<= 0.05%: {100 * t["nll_cost"]:+.4f}% ({met("nll")}); {ops}.']
  return '\n'.join(lines)
