"""End-to-end: the DAG on a tiny generated world with BeamDagRunner."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from components import artifacts
from components.artifacts import GateResult
from components.teacher_gate import executor as gate_executor
from components.teacher_gate import gate
from config import TeacherGateConfig
from models import export
from observation import delay_fit
from observation import labels
from observation import snapshot
from pipeline import local
import schemas
from schemas import codec
from schemas import columns
from schemas import records
from world import synthetic

pytestmark = pytest.mark.e2e


def split_rows(artifact, split):
  return records.read_examples(os.path.join(artifact.uri, f'Split-{split}'))


def by_click(cols):
  order = np.argsort(cols[columns.CLICK_ID])
  return {k: v[order] for k, v in cols.items()}


def test_every_node_completed(e2e):
  states = e2e.states['kd']
  for node in ('ConversionLogExampleGen', 'ServedBaseline', 'StatisticsGen',
               'ImportSchemaGen',
               'ExampleValidator', 'DataGate', 'Transform', 'teacher',
               'TeacherGate', 'BulkInferrer', 'student', 'Quantizer', 'Evaluator',
               'Promotion', 'Pusher'):
    assert states.get(node) == 'COMPLETE', states


def test_t_is_resolved_at_run_time_and_recorded(e2e):
  # The 'worse' night is the one run without a configured T.
  examples = e2e.artifact('ConversionLogExampleGen', 'examples', 'worse')
  # data_end policy: midnight after the world's last day.
  want = e2e.cfg.world.start() + (e2e.cfg.world.days) * (
      snapshot.midnight(snapshot.from_ts(86400).date()) - snapshot.from_ts(0))
  assert local.custom_property(examples, artifacts.SNAPSHOT_TIME) == want.isoformat()
  assert local.custom_property(examples, artifacts.SNAPSHOT_TS) == snapshot.to_ts(want)
  for split in ('train', 'eval'):
    rows = split_rows(examples, split)
    assert (rows[columns.SNAPSHOT_TS] == snapshot.to_ts(want)).all()


def test_labels_equal_the_as_of_t_module(e2e):
  examples = e2e.artifact('ConversionLogExampleGen', 'examples')
  t = local.custom_property(examples, artifacts.SNAPSHOT_TS)
  # Each split read once (reading both per column took ~15 s).
  train, evaluation = split_rows(examples, 'train'), split_rows(examples, 'eval')
  names = [c.name for c in e2e.cfg.dataset.example_columns()
           if c.role != columns.Role.TEACHER]
  got = by_click({k: np.concatenate([train[k], evaluation[k]]) for k in names})
  clicks = records.read_examples(os.path.join(e2e.world, 'clicks'))
  convs = records.read_examples(os.path.join(e2e.world, 'conversions'))
  keep = ((clicks[columns.CLICK_TS] >= t - e2e.cfg.window.days * 86400) &
          (clicks[columns.CLICK_TS] < t))
  # The exposures come from the delay model the ExampleGen fitted and recorded.
  delay_model = e2e.artifact('ConversionLogExampleGen', 'delay_model')
  with open(os.path.join(delay_model.uri, 'delay_fit.json')) as f:
    fit = delay_fit.DelayFit.from_json(f.read())
  assert fit.source == 'fitted' and fit.conversions.sum() > 100
  want = by_click(labels.join_window(
      {k: v[keep] for k, v in clicks.items()}, convs[columns.CLICK_ID],
      convs[columns.CONVERSION_TS], t, e2e.cfg.label_spec(), fit, names))
  for name in names:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_bulk_inferrer_adds_teacher_columns_and_keeps_the_rest(e2e):
  before = e2e.artifact('ConversionLogExampleGen', 'examples')
  after = e2e.artifact('BulkInferrer', 'output_examples')
  assert sorted(artifact_utils.decode_split_names(
      after.split_names)) == ['eval', 'train']
  width = columns.HINT_WIDTH
  for split in ('train', 'eval'):
    old, new = by_click(split_rows(before, split)), by_click(split_rows(after, split))
    assert len(new[columns.CLICK_ID]) == len(old[columns.CLICK_ID]) > 0
    for name in old:
      np.testing.assert_array_equal(new[name], old[name], err_msg=name)
    for name in synthetic.TEACHER_RATES:
      assert np.isfinite(new[name]).all() and (new[name] >= 0).all(), name
      assert new[name].mean() > 0
    # Without the observability head (the fixture's teacher), the teacher's
    # observability is the prior's mature share and its observed exposure o_w.
    assert not e2e.cfg.model.teacher_observability_head
    for q, o, prior, mature in zip(synthetic.TEACHER_OBSERVABILITY,
                                   synthetic.TEACHER_OBSERVED_EXPOSURES,
                                   synthetic.OBSERVED_EXPOSURES,
                                   synthetic.PRIOR_OBSERVABILITY):
      want = np.where(new[synthetic.IN_PANEL] == 1, 1.0, new[mature])
      np.testing.assert_allclose(new[q], want, rtol=1e-4, atol=1e-6, err_msg=q)
      np.testing.assert_allclose(new[o], new[prior], rtol=1e-4, atol=1e-6, err_msg=o)
    hint = new[columns.TEACHER_HINT]
    assert hint.shape == (len(old[columns.CLICK_ID]), width)
    assert np.isfinite(hint).all() and hint.std() > 0


def test_teacher_trained_behind_the_lag_and_says_so(e2e):
  gate_result = e2e.artifact('TeacherGate', gate_executor.RESULT_KEY)
  t = local.custom_property(e2e.artifact('ConversionLogExampleGen', 'examples'),
                            artifacts.SNAPSHOT_TS)
  cutoff = t - int(e2e.cfg.window.teacher_lag_hours * 3600)
  assert local.custom_property(gate_result, 'cutoff_time') == snapshot.from_ts(
      cutoff).isoformat()
  assert local.custom_property(gate_result, 'passed') == 1
  trained = local.custom_property(gate_result, 'examples_trained_on')
  train_rows = split_rows(e2e.artifact('ConversionLogExampleGen', 'examples'), 'train')
  # Non-vacuous: the train split has clicks newer than the cutoff (E x 24 h < lag).
  assert trained == int((train_rows[columns.CLICK_TS] <= cutoff).sum())
  assert trained < len(train_rows[columns.CLICK_TS])
  assert local.custom_property(gate_result, 'gap_closed') > 0


def test_teacher_gate_stops_a_teacher_below_its_bar(e2e, tmp_path):
  result = GateResult()
  result.uri = str(tmp_path)
  model = standard_artifacts.Model()
  model.uri = e2e.artifact('teacher', 'model').uri
  examples = standard_artifacts.Examples()
  src = e2e.artifact('ConversionLogExampleGen', 'examples')
  examples.uri, examples.split_names = src.uri, src.split_names
  with pytest.raises(gate.TeacherGateError, match=r'closes .*% .* bar is 99%'):
    gate_executor.Executor().Do(
        {gate_executor.MODEL_KEY: [model], gate_executor.EXAMPLES_KEY: [examples]},
        {gate_executor.RESULT_KEY: [result]},
        {gate_executor.WINDOWS_KEY: json.dumps(synthetic.WINDOW_NAMES),
       gate_executor.PANEL_KEY: synthetic.IN_PANEL,
       gate_executor.BAR_KEY: TeacherGateConfig(
            mode='truth', min_gap_closed=0.99, min_improvement=0.0).to_json()})


def test_student_reads_serving_features_only_and_both_signatures_predict(e2e):
  model_dir = path_utils.serving_model_path(e2e.artifact('student', 'model').uri)
  loaded = tf.saved_model.load(model_dir)
  examples = e2e.artifact('BulkInferrer', 'output_examples')
  serialized = records.read_records(os.path.join(examples.uri, 'Split-eval'))
  rows = records.read_examples(os.path.join(examples.uri, 'Split-eval'))
  n = len(serialized)

  serving = loaded.signatures[export.SERVING_SIGNATURE]
  out = serving(examples=tf.constant(serialized))
  rates = np.stack([out[k].numpy() for k in export.rate_outputs(synthetic.WINDOW_NAMES)],
                   1)
  np.testing.assert_allclose(out[export.PCONVS].numpy(), rates.sum(1), rtol=1e-5)
  assert out[export.PCONVS].shape == (n,) and (rates > 0).all()

  raw = loaded.signatures[export.RAW_SIGNATURE]
  _, inputs = raw.structured_input_signature
  # The raw signature's inputs are exactly the serving features: no teacher-only,
  # truth, label, exposure or teacher column reaches the model.
  assert set(inputs) == set(synthetic.SERVING_FEATURES)
  feeds = {name: tf.constant(rows[name].reshape(-1, 1).astype(
      inputs[name].dtype.as_numpy_dtype)) for name in inputs}
  (pconvs,) = raw(**feeds).values()
  np.testing.assert_allclose(pconvs.numpy().ravel(), out[export.PCONVS].numpy(),
                             rtol=1e-5)
  # The serving signature parses only serving features: feeding examples
  # stripped of everything else gives the same predictions.
  stripped = codec.encode({n: rows[n] for n in synthetic.SERVING_FEATURES})
  again = serving(examples=tf.constant(stripped))[export.PCONVS].numpy()
  np.testing.assert_allclose(again, out[export.PCONVS].numpy(), rtol=1e-6)
