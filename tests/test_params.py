"""Component parameters: each has one owner type whose JSON round-trips.

The JSON texts land in ML Metadata and in the compiled Vertex template, so their
exact form is pinned here: a change to it is a change to every pipeline root.
"""

import json

import numpy as np
from tfx.types import standard_component_specs

from components.example_gen import executor as example_gen_executor
from components.quantizer import executor as quantizer_executor
from components.teacher_gate import executor as teacher_gate_executor
import config as config_lib
from models import distill
from models import poisson_metric
from observation import eval_labels
from observation import labels
from pipeline import pipeline as pipeline_lib


def test_label_spec_json_round_trips_and_keeps_its_form():
  cfg = config_lib.load_config(None, ['observability.full_threshold=0.9'])
  spec = cfg.label_spec()
  text = spec.to_json()
  assert json.loads(text) == {
      'window_scale_hours': [8.0, 48.0, 480.0],
      'observed_fractions': [1.0, 0.9, 0.3, 0.6, 0.2],
      'full_threshold': 0.9, 'low_threshold': 0.5, 'priors': []}
  assert text == json.dumps(json.loads(text), sort_keys=True)
  back = labels.LabelSpec.from_json(text)
  assert back.observed_fractions == spec.observed_fractions
  assert (back.full_threshold, back.low_threshold) == (0.9, 0.5)
  np.testing.assert_array_equal(back.delay.scale, spec.delay.scale)
  assert back.to_json() == text
  # Segment priors travel too (a measurement study's, per browser x first party).
  priors = [config_lib.PriorConfig(b, fp, [0.5, 0.4, 0.3, 0.2])
            for b in range(5) for fp in (0, 1)]
  cfg.observability.priors = priors
  spec = cfg.label_spec()
  back = labels.LabelSpec.from_json(spec.to_json())
  assert back.priors == spec.priors and len(back.priors) == 10
  np.testing.assert_array_equal(back.segment_priors()[3], [0.5, 0.4, 0.3, 0.2])


def test_eval_label_spec_serves_the_quantizer_and_the_metric():
  cfg = config_lib.load_config(None, ['eval.label_mode=observed_observable'])
  spec = cfg.eval_label_spec()
  assert spec == eval_labels.EvalLabelSpec(
      'observed_observable', (0.55, 0.25, 0.20), 0.95)
  assert eval_labels.EvalLabelSpec.from_json(spec.to_json()) == spec
  assert json.loads(spec.to_json()) == {
      'mode': 'observed_observable', 'window_shares': [0.55, 0.25, 0.20],
      'full_threshold': 0.95}
  # The metric takes the same fields as its keyword arguments (TFMA builds it
  # from this JSON), with the mode named label_mode.
  kwargs = json.loads(poisson_metric.config_json(cfg.eval_label_spec('truth'), 'x'))
  metric = poisson_metric.PoissonLogLoss(**kwargs)
  assert metric.name == 'x'
  assert kwargs == {'name': 'x', 'label_mode': 'truth',
                    'window_shares': [0.55, 0.25, 0.20], 'full_threshold': 0.95}


def test_teacher_bar_and_trainer_config_round_trip():
  cfg = config_lib.load_config(None, ['teacher_gate.min_gap_closed=0.7',
                                      'distill.alpha=0.3'])
  bar = config_lib.TeacherGateConfig.from_json(cfg.teacher_gate.to_json())
  assert bar == cfg.teacher_gate and bar.min_gap_closed == 0.7
  custom = config_lib.trainer_custom_config(cfg)
  assert list(custom) == [config_lib.TRAINER_CONFIG_KEY]
  assert config_lib.from_trainer_custom_config(custom) == cfg
  weights = distill.DistillWeights.from_config(cfg.distill)
  assert weights.alpha == 0.3 and weights.uses_teacher
  production = config_lib.load_config(None, ['distill.recipe=production'])
  assert distill.DistillWeights.from_config(production.distill) == (
      distill.DistillWeights(hard_observability=False))


def test_the_dag_passes_each_parameter_through_its_owner_type():
  cfg = config_lib.load_config(None, [])
  dag = pipeline_lib.create_pipeline(
      cfg, pipeline_root='/r', data_root='/d', schema_path='/s', serving_dir='/v')
  nodes = {c.id: c for c in dag.components}
  assert nodes['ConversionLogExampleGen'].exec_properties[
      example_gen_executor.LABEL_SPEC_KEY] == cfg.label_spec().to_json()
  assert nodes['Quantizer'].exec_properties[
      quantizer_executor.EVAL_LABEL_KEY] == cfg.eval_label_spec().to_json()
  assert nodes['TeacherGate'].exec_properties[
      teacher_gate_executor.BAR_KEY] == cfg.teacher_gate.to_json()
  for node_id in pipeline_lib.TRAINER_IDS:
    custom = json.loads(nodes[node_id].exec_properties[
        standard_component_specs.CUSTOM_CONFIG_KEY])
    assert config_lib.from_trainer_custom_config(custom) == cfg
