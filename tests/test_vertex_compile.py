"""Smoke: create_pipeline compiles for Vertex AI Pipelines (no network)."""

import json

from tfx import v1 as tfx
from tfx.orchestration import data_types

from pipeline import config as config_lib
from pipeline import pipeline as pipeline_lib

IMAGE = 'gcr.io/tfx-oss-public/tfx:1.16.0'


def test_create_pipeline_compiles_with_kubeflow_v2(tmp_path):
  cfg = config_lib.load_config()
  snapshot_time = data_types.RuntimeParameter(name='snapshot_time', ptype=str,
                                              default='')
  p = pipeline_lib.create_pipeline(
      cfg, pipeline_root='gs://example-bucket/root',
      data_root='gs://example-bucket/logs',
      schema_path='/pipeline/schemas/schema.pbtxt',
      serving_dir='gs://example-bucket/serving',
      beam_pipeline_args=['--runner=DataflowRunner'],
      snapshot_time=snapshot_time)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=IMAGE),
      output_dir=str(tmp_path), output_filename='pipeline.json')
  runner.run(p, parameter_values={'snapshot_time': ''})
  spec = json.loads((tmp_path / 'pipeline.json').read_text())['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  assert {'ConversionLogExampleGen', 'StatisticsGen', 'ImportSchemaGen',
          'ExampleValidator', 'DataGate', 'Transform', 'teacher', 'TeacherGate',
          'BulkInferrer', 'BaselineCheck', 'student', 'Quantizer', 'Evaluator',
          'Pusher'} <= set(tasks)
  # The LatestBlessedModelStrategy Resolver compiles to two resolver tasks; the
  # Evaluator's baseline comes from the model one.
  resolver = 'LatestBlessedModelResolver-model-resolver'
  assert resolver in tasks
  baseline = tasks['Evaluator']['inputs']['artifacts']['baseline_model']
  assert baseline['taskOutputArtifact']['producerTask'] == resolver
  # The DataGate stop survives compilation: Transform waits for it.
  assert 'DataGate' in tasks['Transform']['dependentTasks']
  # No baseline and not the bootstrap stops the run before any training.
  assert 'BaselineCheck' in tasks['Transform']['dependentTasks']
  # The gate and the push follow the quantized student.
  assert 'Quantizer' in tasks['Evaluator']['dependentTasks']
  assert 'Evaluator' in tasks['Pusher']['dependentTasks']
  # T stays a run-time parameter (resolved by the ExampleGen when empty).
  assert 'snapshot_time' in spec['root']['inputDefinitions']['parameters']
  executors = spec['deploymentSpec']['executors']
  containers = [e['container'] for e in executors.values() if 'container' in e]
  assert len(containers) == len(tasks) - 2  # all but the two resolver tasks
  assert all(c['image'] == IMAGE for c in containers)
