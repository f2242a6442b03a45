"""Component parameters: each has one owner type whose JSON round-trips.

The JSON texts land in ML Metadata and in the compiled Vertex template, so their
exact form is pinned here: a change to it is a change to every pipeline root.
"""

import dataclasses
import json
import os

from google.protobuf import json_format
import numpy as np
from tfx.types import standard_component_specs

from components.example_gen import executor as example_gen_executor
from components.quantizer import executor as quantizer_executor
from components.teacher_gate import executor as teacher_gate_executor
import config as config_lib
from models import distill
from models import features
from models import poisson_metric
from observation import eval_labels
from observation import labels
from pipeline import evaluation
from pipeline import pipeline as pipeline_lib


def test_label_spec_json_round_trips_and_keeps_its_form():
  cfg = config_lib.load_config(None, ['observability.full_threshold=0.9'])
  spec = cfg.label_spec()
  text = spec.to_json()
  assert json.loads(text) == {
      'windows': [{'name': '0_2d', 'start_hours': 0.0, 'end_hours': 48.0},
                  {'name': '2_7d', 'start_hours': 48.0, 'end_hours': 168.0},
                  {'name': '7_90d', 'start_hours': 168.0, 'end_hours': 2160.0}],
      'prior_shares': [0.55, 0.25, 0.20], 'prior_scales': [8.0, 48.0, 480.0],
      'observed_fractions': [1.0, 0.9, 0.3, 0.6, 0.2],
      'full_threshold': 0.9, 'low_threshold': 0.5, 'priors': [],
      'segment_edges': [0.0, 24.0, 48.0, 168.0, 2160.0],
      'segment': 'browser', 'first_party': 'advertiser_first_party',
      'tcpa': 'target_cpa', 'panel': 'in_panel', 'delay_source': 'fitted',
      'delay_segment_by': '', 'delay_segments': 1, 'prior_conversions': 20.0,
      'min_segment_conversions': 500}
  assert text == json.dumps(json.loads(text), sort_keys=True)
  back = labels.LabelSpec.from_json(text)
  assert back == spec
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
      'observed_observable', ('0_2d', '2_7d', '7_90d'), 'in_panel', 0.95)
  assert eval_labels.EvalLabelSpec.from_json(spec.to_json()) == spec
  assert json.loads(spec.to_json()) == {
      'mode': 'observed_observable', 'window_names': ['0_2d', '2_7d', '7_90d'],
      'panel': 'in_panel', 'full_threshold': 0.95}
  # The metric takes the same fields as its keyword arguments (TFMA builds it
  # from this JSON), with the mode named label_mode.
  kwargs = json.loads(poisson_metric.config_json(cfg.eval_label_spec('truth'), 'x'))
  metric = poisson_metric.PoissonLogLoss(**kwargs)
  assert metric.name == 'x'
  assert kwargs == {'name': 'x', 'label_mode': 'truth',
                    'window_names': ['0_2d', '2_7d', '7_90d'], 'panel': 'in_panel',
                    'full_threshold': 0.95}


def test_teacher_bar_and_trainer_config_round_trip():
  cfg = config_lib.load_config(None, ['teacher_gate.min_gap_closed=0.7',
                                      'distill.alpha=0.3'])
  bar = config_lib.TeacherGateConfig.from_json(cfg.teacher_gate.to_json())
  assert bar == cfg.teacher_gate and bar.min_gap_closed == 0.7
  custom = config_lib.trainer_custom_config(cfg)
  assert list(custom) == [config_lib.TRAINER_CONFIG_KEY]
  assert config_lib.from_trainer_custom_config(custom) == dataclasses.replace(
      cfg, dataset_file='')
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
    assert config_lib.from_trainer_custom_config(custom) == dataclasses.replace(
        cfg, dataset_file='')
  assert nodes['ConversionLogExampleGen'].exec_properties[
      example_gen_executor.DATASET_KEY] == cfg.dataset_json()
  assert json.loads(nodes['Transform'].exec_properties[
      standard_component_specs.CUSTOM_CONFIG_KEY]) == features.transform_config(
          cfg.dataset.teacher_features())


def test_the_eval_config_is_the_one_before_dataset_specs():
  """Golden: the default config's EvalConfig (compiled into the Vertex template)
  is the one the pipeline had before dataset specs (commit f053942), but for the
  metrics' keyword arguments: the windows and the panel column the spec names
  (and the SpendProxy's tCPA column) instead of the configured window shares."""
  cfg = config_lib.load_config(None, [])
  def as_json(config):
    return json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
  got = as_json(evaluation.build_eval_config(cfg))
  with open(os.path.join(os.path.dirname(__file__), 'golden',
                         'synthetic_world_eval_config_before_specs.json')) as f:
    want = json.load(f)
  for config in (got, want):
    for spec in config['metrics_specs']:
      for metric in spec['metrics']:
        metric.pop('config', None)
  assert got == want
  kwargs = [json.loads(m['config']) for m in as_json(evaluation.build_eval_config(
      cfg))['metrics_specs'][0]['metrics'] if 'config' in m]
  assert all(k['window_names'] == ['0_2d', '2_7d', '7_90d'] and
             k['panel'] == 'in_panel' for k in kwargs)
