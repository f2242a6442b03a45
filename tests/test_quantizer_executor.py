"""Quantizer on the end-to-end run's student (and its executor run directly)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components.quantizer import convert
from components.quantizer import executor
from models import export
from models import features as features_lib
from schemas import columns
from schemas import records
from tests import helpers
from world import synthetic

pytestmark = pytest.mark.e2e

# INT8 vs the float student on the e2e night's eval examples (pConvs). Measured
# on this fixture's KD student (300 steps warm-started from the 10-step
# bootstrap, ~6k eval examples): mean 0.70%, max 31.4% (one example in the
# low-rate tail, where a quantization step is a large share of the rate);
# bounds at about 3x the mean and 1.6x the max. The bounds that back the
# README's figures are in tests/test_quantizer_tolerance.py, on a tiny student
# of the same architecture through the same executor.
MEAN_REL_TOL, MAX_REL_TOL = 0.02, 0.50
# The size ratio depends on the architecture and vocabularies only (the same as
# test_quantizer_tolerance's student and the serving benchmark's: 0.2819,
# 48,456 of 171,872 bytes); margin +0.01.
SIZE_RATIO_TOL = 0.2819 + 0.01


@pytest.fixture(scope='module')
def quantized(e2e):
  model = e2e.artifact('Quantizer', 'quantized_model')
  report_dir = e2e.artifact('Quantizer', 'report').uri
  with open(os.path.join(report_dir, executor.REPORT_FILE)) as f:
    report = json.load(f)
  examples = e2e.artifact('BulkInferrer', 'output_examples')
  eval_dir = os.path.join(examples.uri, 'Split-eval')
  return model, report, eval_dir, records.read_examples(eval_dir)


def test_tflite_is_where_tfma_looks_with_int8_core_and_builtin_ops(quantized):
  model, report, _, _ = quantized
  path = os.path.join(path_utils.serving_model_path(model.uri), 'tflite')
  assert os.path.isfile(path)
  with open(path, 'rb') as f:
    content = f.read()
  ops = convert.op_table(content)
  assert not [op.name for op in ops if op.name.startswith('Flex') or op.name == 'CUSTOM']
  fc = [op for op in ops if op.name == 'FULLY_CONNECTED']
  gather = [op for op in ops if op.name == 'GATHER']
  assert fc and all(op.input_dtypes[:2] == [np.int8, np.int8] for op in fc)
  assert gather and all(op.input_dtypes[0] == np.int8 for op in gather)
  # The edges stay float: log of raw inputs, exp and sum into pConvs.
  assert any(op.name == 'LOG' and op.input_dtypes[0] == np.float32 for op in ops)
  assert any(op.name == 'EXP' and op.input_dtypes[0] == np.float32 for op in ops)
  assert report['size_ratio'] < SIZE_RATIO_TOL and report['mode'] == 'int8'
  # The float student is kept beside it, and loads.
  loaded = tf.saved_model.load(executor.float_student_path(model.uri))
  assert export.RAW_SIGNATURE in loaded.signatures


def test_predictions_match_the_float_student(e2e, quantized):
  model, report, _, rows = quantized
  with open(os.path.join(path_utils.serving_model_path(model.uri), 'tflite'), 'rb') as f:
    got = convert.predict(f.read(), rows)
  student = tf.saved_model.load(path_utils.serving_model_path(
      e2e.artifact('student', 'model').uri))
  raw = student.signatures[export.RAW_SIGNATURE]
  feeds = {n: tf.constant(rows[n].reshape(-1, 1).astype(
      features_lib.dtype(synthetic.column(n)).as_numpy_dtype)) for n in synthetic.SERVING_FEATURES}
  want = list(raw(**feeds).values())[0].numpy().ravel()
  rel = np.abs(got - want) / want
  assert (got > 0).all()
  assert rel.mean() < MEAN_REL_TOL and rel.max() < MAX_REL_TOL, (rel.mean(), rel.max())
  assert report['errors']['mean_rel_error'] < MEAN_REL_TOL
  assert report['eval_examples'] == len(got)


def test_tfma_predictions_equal_the_interpreters(quantized, tmp_path):
  model, _, eval_dir, rows = quantized
  model_dir = path_utils.serving_model_path(model.uri)
  tfma_pred = helpers.tfma_tflite_predictions(
      model_dir, os.path.join(eval_dir, '*'), columns.CLICK_ID,
      columns.TRUE_CONVERSIONS, str(tmp_path / 'predictions.pkl'))
  with open(os.path.join(model_dir, 'tflite'), 'rb') as f:
    ours = convert.predict(f.read(), rows)
  assert len(tfma_pred) == len(ours)
  theirs = np.array([tfma_pred[int(c)] for c in rows[columns.CLICK_ID]])
  # Equal (same kernels, same inputs): no feature was silently filled with -1.
  np.testing.assert_allclose(theirs, ours, rtol=1e-6)


def test_guard_stops_at_the_bound_naming_both_numbers(e2e, quantized, tmp_path):
  _, report, _, _ = quantized
  cost = report['nll_relative_change']

  def run(bound, name):
    student = standard_artifacts.Model()
    student.uri = e2e.artifact('student', 'model').uri
    examples = standard_artifacts.Examples()
    src = e2e.artifact('BulkInferrer', 'output_examples')
    examples.uri = src.uri
    examples.split_names = src.split_names
    out, rep = standard_artifacts.Model(), standard_artifacts.Model()
    out.uri, rep.uri = str(tmp_path / name / 'model'), str(tmp_path / name / 'report')
    executor.Executor().Do(
        {executor.MODEL_KEY: [student], executor.EXAMPLES_KEY: [examples]},
        {executor.QUANTIZED_KEY: [out], executor.REPORT_KEY: [rep]},
        {executor.MODE_KEY: 'int8', executor.CALIBRATION_EXAMPLES_KEY: 1000,
         executor.CALIBRATION_SAMPLING_KEY: 'tcpa_stratified',
         executor.MAX_NLL_INCREASE_KEY: bound, executor.LATENCY_SAMPLES_KEY: 20,
         executor.EVAL_LABEL_KEY: e2e.cfg.eval_label_spec().to_json(),
         executor.SEED_KEY: e2e.cfg.model.seed})
    return out

  with pytest.raises(convert.QuantizationError) as e:
    run(cost - 1e-6, 'tight')
  msg = str(e.value)
  assert f'{report["nll_float"]:.6f}' in msg and f'{report["nll_quantized"]:.6f}' in msg
  assert 'above the bound' in msg
  assert not os.path.exists(tmp_path / 'tight' / 'model' / 'Format-Serving')
  out = run(cost + 1e-6, 'loose')
  assert os.path.isfile(os.path.join(out.uri, 'Format-Serving', 'tflite'))
