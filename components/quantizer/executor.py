"""Quantizer executor: convert, check, measure, guard, write.

Output model artifact layout:
  <uri>/Format-Serving/tflite   the quantized model (where TFMA's tf_lite loader looks)
  <uri>/float_student/          the float student SavedModel (for warm starts)
Report artifact: <uri>/report.json.
"""

import dataclasses
import json
import os
import tempfile
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.quantizer import convert
from components.quantizer import measure
from models import export
from observation import eval_labels
from schemas import records

# Input, output and parameter keys (the component spec and the tests use these).
MODEL_KEY = 'model'
EXAMPLES_KEY = 'examples'
QUANTIZED_KEY = 'quantized_model'
REPORT_KEY = 'report'
MODE_KEY = 'mode'
CALIBRATION_EXAMPLES_KEY = 'calibration_examples'
CALIBRATION_SAMPLING_KEY = 'calibration_sampling'
MAX_NLL_INCREASE_KEY = 'max_nll_increase'
LATENCY_SAMPLES_KEY = 'latency_samples'
# JSON of observation.eval_labels.EvalLabelSpec.
EVAL_LABEL_KEY = 'eval_label'
SEED_KEY = 'seed'
SERVING_FEATURES_KEY = 'serving_features'
FLOAT_STUDENT_DIR = export.FLOAT_STUDENT_DIR
REPORT_FILE = 'report.json'
# Examples read from the train split to draw the calibration set from.
CALIBRATION_POOL = 100_000


def float_student_path(model_uri: str) -> str:
  """Where a quantized model artifact keeps its float student."""
  return os.path.join(model_uri, FLOAT_STUDENT_DIR)


def _records(examples, split: str, limit: int = 0) -> List[bytes]:
  return records.read_records(
      os.path.join(artifact_utils.get_split_uri([examples], split), '*'), limit)


def summary_text(report: Dict) -> str:
  lat = report['latency']
  return (
      f"Quantizer ({report['mode']}): {report['float32_tflite_bytes']:,} -> "
      f"{report['quantized_bytes']:,} bytes ({report['size_ratio']:.3f}x); pConvs error "
      f"mean {report['errors']['mean_rel_error']:.2%}, max {report['errors']['max_rel_error']:.2%}"
      f"; NLL ({report['label_mode']}) float {report['nll_float']:.6f} -> quantized "
      f"{report['nll_quantized']:.6f} ({report['nll_relative_change']:+.4%}, bound "
      f"{report['max_nll_increase']:.4%}); p99.9 latency us: SavedModel "
      f"{lat['float_saved_model']['p99.9_us']:.0f}, float32 TFLite "
      f"{lat['float32_tflite']['p99.9_us']:.1f}, quantized {lat['quantized_tflite']['p99.9_us']:.1f}")


class Executor(base_executor.BaseExecutor):

  def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
         exec_properties: Dict[str, Any]) -> None:
    student = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
    examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
    out_model = artifact_utils.get_single_instance(output_dict[QUANTIZED_KEY])
    report_artifact = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
    mode = exec_properties[MODE_KEY]
    label = eval_labels.EvalLabelSpec.from_json(exec_properties[EVAL_LABEL_KEY])
    student_dir = path_utils.serving_model_path(student.uri)
    # The serving features are the student's raw signature's inputs (the
    # dataset's serving features, by name and dtype).
    inputs = convert.raw_inputs(student_dir)
    names = list(inputs)
    dtypes = {n: spec.dtype.as_numpy_dtype for n, spec in inputs.items()}
    contract = json.loads(exec_properties.get(SERVING_FEATURES_KEY) or '[]') or names

    pool = measure.feature_rows(_records(examples, 'train', CALIBRATION_POOL))
    eval_records = _records(examples, 'eval')
    eval_rows = measure.feature_rows(eval_records)
    label = dataclasses.replace(label, mode=eval_labels.resolve(
        label.mode, list(eval_rows), label.window_names, label.panel))

    with tempfile.TemporaryDirectory() as tmp:
      raw_dir = convert.raw_saved_model(student_dir, os.path.join(tmp, 'raw'))
      float_model = convert.convert(raw_dir, 'float32')
      calibration = np.union1d(
          measure.calibration_indices(pool, exec_properties[CALIBRATION_EXAMPLES_KEY],
                                      exec_properties[CALIBRATION_SAMPLING_KEY],
                                      exec_properties[SEED_KEY]),
          measure.tail_indices(tf.saved_model.load(student_dir), pool))
      quantized = convert.convert(
          raw_dir, mode, measure.representative(pool, names, dtypes, calibration))
    convert.check(float_model, contract, 'float32')
    ops = convert.check(quantized, contract, mode)

    float_pred = convert.predict(float_model, eval_rows)
    quant_pred = convert.predict(quantized, eval_rows)
    nll_float = measure.scored_nll(float_pred, eval_rows, label)
    nll_quant = measure.scored_nll(quant_pred, eval_rows, label)
    samples = exec_properties[LATENCY_SAMPLES_KEY]
    report = {
        'mode': mode,
        'calibration_examples': int(len(calibration)),
        'calibration_sampling': exec_properties[CALIBRATION_SAMPLING_KEY],
        'float32_tflite_bytes': len(float_model),
        'quantized_bytes': len(quantized),
        'size_ratio': len(quantized) / len(float_model),
        'ops': ops,
        'eval_examples': len(eval_records),
        'errors': measure.prediction_errors(quant_pred, float_pred),
        'label_mode': label.mode,
        'nll_float': nll_float,
        'nll_quantized': nll_quant,
        'nll_relative_change': (nll_quant - nll_float) / nll_float,
        'max_nll_increase': exec_properties[MAX_NLL_INCREASE_KEY],
        'latency': {
            'float_saved_model': measure.saved_model_latency(
                student_dir, eval_records, min(samples, 2000)),
            'float32_tflite': measure.tflite_latency(float_model, eval_rows, samples),
            'quantized_tflite': measure.tflite_latency(quantized, eval_rows, samples),
        },
    }
    io_utils.write_string_file(os.path.join(report_artifact.uri, REPORT_FILE),
                               json.dumps(report, indent=1, sort_keys=True))
    logging.info(summary_text(report))
    if report['nll_relative_change'] > report['max_nll_increase']:
      raise convert.QuantizationError(
          f'quantization costs {report["nll_relative_change"]:.4%} NLL (float '
          f'{nll_float:.6f}, quantized {nll_quant:.6f}), above the bound '
          f'{report["max_nll_increase"]:.4%}; nothing is passed downstream')

    convert.write(quantized, path_utils.serving_model_path(out_model.uri))
    io_utils.copy_dir(student_dir, float_student_path(out_model.uri))
    for artifact in (out_model, report_artifact):
      artifact.set_string_custom_property('quantization_mode', mode)
      artifact.set_int_custom_property('quantized_bytes', len(quantized))
      artifact.set_float_custom_property('size_ratio', report['size_ratio'])
      artifact.set_float_custom_property('nll_relative_change',
                                         report['nll_relative_change'])
