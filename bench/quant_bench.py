"""Quantization benchmark: the Quantizer on the benchmark's KD student, every mode.

  python -m bench.quant_bench [--world-seed 42] [--student kd_full] [--latency 20000]

Runs after bench.quality_bench (it reuses the first world's pipeline run and the
student trained under seed 0), through the Quantizer's own executor. Records, per mode, the sizes and their
ratio, pConvs error vs the float student, the relative NLL change on eval, and
single-example latency p50 / p99 / p99.9 (float SavedModel, float32 TFLite, the
quantized model), and checks the targets: INT8 size <= 0.30x float32 TFLite, NLL
within 0.05%, p99.9 latency <= half of float32 TFLite's.
"""

import argparse
import os
import sys


from bench import common
from bench import quality_bench

TARGETS = {'size_ratio': 0.30, 'nll_relative_change': 0.0005, 'latency_ratio': 0.5}


def markdown(result) -> str:
  lines = ['| mode | bytes (float32 TFLite -> quantized) | size ratio | pConvs error '
           'mean / max | NLL change vs float | p50 / p99 / p99.9 (us) |',
           '|---|---:|---:|---:|---:|---:|']
  first = next(iter(result['modes'].values()))
  for name, lat in (('float SavedModel', 'float_saved_model'),
                    ('float32 TFLite', 'float32_tflite')):
    l = first['latency'][lat]
    lines.append(f'| {name} | | | | | {l["p50_us"]:.1f} / {l["p99_us"]:.1f} / '
                 f'{l["p99.9_us"]:.1f} |')
  for mode, r in result['modes'].items():
    l = r['latency']['quantized_tflite']
    lines.append(
        f'| {mode} | {r["float32_tflite_bytes"]:,} -> {r["quantized_bytes"]:,} | '
        f'{r["size_ratio"]:.3f}x | {100 * r["errors"]["mean_rel_error"]:.2f}% / '
        f'{100 * r["errors"]["max_rel_error"]:.1f}% | {100 * r["nll_relative_change"]:+.4f}% '
        f'| {l["p50_us"]:.1f} / {l["p99_us"]:.1f} / {l["p99.9_us"]:.1f} |')
  t = result['int8_targets']
  lines += ['', 'INT8 targets: size <= 0.30x: '
            f'{t["size_ratio"]:.3f}x ({"met" if t["size_met"] else "missed"}); NLL within '
            f'0.05%: {100 * t["nll_relative_change"]:+.4f}% '
            f'({"met" if t["nll_met"] else "missed"}); p99.9 <= half of float32 '
            f'TFLite: {t["latency_ratio"]:.2f}x ({"met" if t["latency_met"] else "missed"}).']
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m bench.quant_bench',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--world-seed', type=int, default=quality_bench.FIRST_WORLD_SEED)
  parser.add_argument('--student', default='kd_full')
  parser.add_argument('--modes', nargs='+', default=['int8', 'dynamic_range', 'float16'])
  parser.add_argument('--latency', type=int, default=20_000,
                      help='single-example invocations per model (p99.9 needs many)')
  parser.add_argument('--set', dest='overrides', action='append', default=[])
  parser.add_argument('--out', default='bench/results/quantization.json')
  args = parser.parse_args(argv)
  size = quality_bench.SIZES['full']
  cfg = quality_bench.bench_config(size, args.world_seed, args.overrides)
  run = quality_bench.WorldRun(size, args.world_seed, args.overrides)
  student_dir = os.path.join(run.dir, 'students', f'{args.student}-s0')
  if not os.path.exists(student_dir):
    raise SystemExit(f'{student_dir} is missing: run bench.quality_bench first')
  artifacts = quality_bench.run_pipeline(cfg)
  modes = {}
  for mode in args.modes:
    modes[mode] = quality_bench.quantize(
        artifacts, student_dir, mode, os.path.join(run.dir, 'quantized', mode), cfg,
        args.latency)
    print(f'{mode}: size {modes[mode]["size_ratio"]:.3f}x, NLL '
          f'{modes[mode]["nll_relative_change"]:+.4%}', flush=True)
  int8 = modes.get('int8') or next(iter(modes.values()))
  latency_ratio = (int8['latency']['quantized_tflite']['p99.9_us'] /
                   int8['latency']['float32_tflite']['p99.9_us'])
  result = {**common.provenance(cfg), 'student': args.student, 'modes': modes,
            'int8_targets': {
                'size_ratio': int8['size_ratio'],
                'size_met': int8['size_ratio'] <= TARGETS['size_ratio'],
                'nll_relative_change': int8['nll_relative_change'],
                'nll_met': abs(int8['nll_relative_change']) <= TARGETS['nll_relative_change'],
                'latency_ratio': latency_ratio,
                'latency_met': latency_ratio <= TARGETS['latency_ratio']}}
  common.write_json(args.out, result)
  text = markdown(result)
  with open(args.out.replace('.json', '.md'), 'w') as f:
    f.write(text + '\n')
  print(text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
