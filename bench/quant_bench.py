"""Quantization benchmark: the Quantizer on the benchmark's KD student, every mode.

  python -m bench.quant_bench [--clicks 640000] [--student kd_full] [--latency 20000]

Runs after bench.quality_bench (it reuses its pipeline run and trained students),
through the Quantizer's own executor. Records, per mode, the sizes and their
ratio, pConvs error vs the float student, the relative NLL change on eval, and
single-example latency p50 / p99 / p99.9 (float SavedModel, float32 TFLite, the
quantized model), and checks the targets: INT8 size <= 0.30x float32 TFLite, NLL
within 0.05%, p99.9 latency <= half of float32 TFLite's.
"""

import argparse
import json
import os
import sys

from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from bench import common
from bench import quality_bench
from components.quantizer import executor

TARGETS = {'size_ratio': 0.30, 'nll_relative_change': 0.0005, 'latency_ratio': 0.5}


def quantize(artifacts, student_dir: str, mode: str, out_dir: str, cfg,
             latency_samples: int) -> dict:
  student = standard_artifacts.Model()
  # A Trainer's Model artifact holds the SavedModel at <uri>/Format-Serving; the
  # quality bench wrote it to student_dir, so link it into that layout.
  student.uri = os.path.join(out_dir, 'student')
  serving = path_utils.serving_model_dir(student.uri)
  if not os.path.exists(serving):
    os.makedirs(student.uri, exist_ok=True)
    os.symlink(os.path.abspath(student_dir), serving)
  examples = standard_artifacts.Examples()
  examples.uri = artifacts['inferred']
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  out, report = standard_artifacts.Model(), standard_artifacts.Model()
  out.uri, report.uri = os.path.join(out_dir, 'model'), os.path.join(out_dir, 'report')
  executor.Executor().Do(
      {executor.MODEL_KEY: [student], executor.EXAMPLES_KEY: [examples]},
      {executor.QUANTIZED_KEY: [out], executor.REPORT_KEY: [report]},
      {executor.MODE_KEY: mode,
       executor.CALIBRATION_EXAMPLES_KEY: cfg.quantizer.calibration_examples,
       executor.CALIBRATION_SAMPLING_KEY: cfg.quantizer.calibration_sampling,
       executor.MAX_NLL_INCREASE_KEY: 1.0,
       executor.LATENCY_SAMPLES_KEY: latency_samples,
       executor.EVAL_LABEL_KEY: cfg.eval_label_spec().to_json(),
       executor.SEED_KEY: cfg.model.seed})
  with open(os.path.join(report.uri, executor.REPORT_FILE)) as f:
    return json.load(f)


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
  parser.add_argument('--clicks', type=int, default=640_000)
  parser.add_argument('--student', default='kd_full')
  parser.add_argument('--modes', nargs='+', default=['int8', 'dynamic_range', 'float16'])
  parser.add_argument('--latency', type=int, default=20_000,
                      help='single-example invocations per model (p99.9 needs many)')
  parser.add_argument('--set', dest='overrides', action='append', default=[])
  parser.add_argument('--out', default=f'{quality_bench.RESULTS}/quantization.json')
  args = parser.parse_args(argv)
  cfg = quality_bench.bench_config(args.clicks, args.overrides)
  artifacts = quality_bench.run_pipeline(
      quality_bench.bench_config(args.clicks, args.overrides +
                                 quality_bench.RECIPES['production']), reuse=True)
  student_dir = os.path.join(quality_bench.RESULTS, 'students', args.student)
  if not os.path.exists(student_dir):
    raise SystemExit(f'{student_dir} is missing: run bench.quality_bench first')
  modes = {}
  for mode in args.modes:
    modes[mode] = quantize(artifacts, student_dir, mode,
                           os.path.join(quality_bench.RESULTS, 'quantized', mode), cfg,
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
