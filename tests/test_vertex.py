"""Vertex AI: compile, submit and schedule, offline.

The compiled JSON is checked as Vertex will read it; submit and schedule go
through the real aiplatform client with anonymous credentials and only the gRPC
transport is intercepted (its channel never connects), so every request field
asserted here is what would go on the wire.
"""

import json
from unittest import mock

import grpc
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud.aiplatform.utils import gcs_utils
from google.cloud.aiplatform_v1.services.pipeline_service.transports import grpc as pipeline_grpc
from google.cloud.aiplatform_v1.services.schedule_service.transports import grpc as schedule_grpc
from tfx.types import standard_component_specs

from components.example_gen import executor as example_gen_executor
import config as config_lib
from pipeline import cli
from pipeline import vertex
from tests import app_installs

IMAGE = 'europe-docker.pkg.dev/test-project/kd/pipeline:test'
TPU_IMAGE = 'europe-docker.pkg.dev/test-project/kd/student-tpu:test'
SA = 'pipelines@test-project.iam.gserviceaccount.com'
KEY = 'projects/test-project/locations/europe-west4/keyRings/kr/cryptoKeys/k'
VERTEX = [
    'vertex.project=test-project', 'vertex.region=europe-west4',
    'vertex.pipeline_root=gs://test-bucket/root', 'vertex.data_root=gs://test-bucket/logs',
    'vertex.serving_dir=gs://test-bucket/serving', f'vertex.image={IMAGE}',
    f'vertex.student.image={TPU_IMAGE}', f'vertex.service_account={SA}',
    f'vertex.encryption_key={KEY}', 'vertex.labels={team: ads, env: test}',
    'vertex.dataflow.temp_location=gs://test-bucket/tmp',
    'vertex.dataflow.max_num_workers=7',
    'vertex.schedule.cron=30 2 * * *', 'vertex.schedule.time_zone=Europe/Amsterdam',
]


@pytest.fixture(scope='module')
def cfg():
  return config_lib.load_config(None, VERTEX)


@pytest.fixture(scope='module')
def template(cfg, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('vertex') / 'pipeline.json')
  assert cli.main(['compile', '--output', path] + sum(
      (['--set', o] for o in VERTEX), [])) == 0
  return path


def _spec(template):
  with open(template) as f:
    return json.load(f)


def _custom_config(task):
  value = task['inputs']['parameters'][
      standard_component_specs.CUSTOM_CONFIG_KEY]['runtimeValue']
  return json.loads(value['constantValue']['stringValue'])


def test_compiled_json_has_every_node_and_the_run_time_t(template):
  job = _spec(template)
  spec = job['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  assert {'ConversionLogExampleGen', 'ServedBaseline', 'StatisticsGen',
          'ImportSchemaGen', 'ExampleValidator', 'DataGate', 'Transform', 'teacher',
          'TeacherGate', 'BulkInferrer', 'SweepLookup', 'student', 'Quantizer',
          'Evaluator', 'Promotion', 'Pusher'} == set(tasks)
  # The stops survive compilation.
  assert {'DataGate', 'ServedBaseline'} <= set(tasks['Transform']['dependentTasks'])
  assert 'TeacherGate' in tasks['BulkInferrer']['dependentTasks']
  # The push follows the promotion step's blessing, not the Evaluator's.
  assert 'Promotion' in tasks['Pusher']['dependentTasks']
  assert 'Evaluator' not in tasks['Pusher']['dependentTasks']
  assert {'Evaluator', 'Quantizer', 'ServedBaseline'} <= set(
      tasks['Promotion']['dependentTasks'])
  assert 'model_blessing' not in tasks['BulkInferrer']['inputs'].get('artifacts', {})
  # T is a run-time parameter, empty by default (resolved when the run starts).
  assert vertex.SNAPSHOT_PARAMETER in spec['root']['inputDefinitions']['parameters']
  gen = tasks['ConversionLogExampleGen']['inputs']['parameters'][
      example_gen_executor.SNAPSHOT_TIME_KEY]
  assert gen == {'componentInputParameter': vertex.SNAPSHOT_PARAMETER}
  assert job['runtimeConfig']['parameters'][vertex.SNAPSHOT_PARAMETER] == {
      'stringValue': ''}
  assert job['runtimeConfig']['gcsOutputDirectory'] == 'gs://test-bucket/root'
  assert job['runtimeConfig']['parameters'][vertex.FORCE_PARAMETER] == {
      'intValue': '0'}


def test_the_baseline_is_what_serving_serves_and_no_blessing_query_feeds_it(template):
  spec = _spec(template)['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  # No resolver task: nothing queries ML Metadata for a ModelBlessing by type.
  assert not [t for t in tasks if 'resolver' in t.lower()]
  for task in tasks.values():
    for art in task['inputs'].get('artifacts', {}).values():
      assert 'taskOutputArtifact' in art, art  # every input is a task's output
  baseline = tasks['Evaluator']['inputs']['artifacts']['baseline_model']
  assert baseline['taskOutputArtifact'] == {'producerTask': 'ServedBaseline',
                                            'outputArtifactKey': 'baseline'}
  # model.student_warm_start is off by default (the nightly config turns it on
  # and the student then reads the same output; the local e2e run covers it).
  assert 'base_model' not in tasks['student']['inputs']['artifacts']
  # The ModelBlessings are the Evaluator's (recorded) and the Promotion's, which
  # the Pusher reads; no resolver queries either by type.
  blessing_outputs = [
      (name, key) for name, comp in spec['components'].items()
      for key, out in comp.get('outputDefinitions', {}).get('artifacts', {}).items()
      if 'title: tfx.ModelBlessing' in out['artifactType'].get('instanceSchema', '')]
  assert sorted(blessing_outputs) == [('Evaluator', 'blessing'),
                                      ('Promotion', 'blessing')]
  pusher_blessing = tasks['Pusher']['inputs']['artifacts']['model_blessing']
  assert pusher_blessing['taskOutputArtifact']['producerTask'] == 'Promotion'
  promotion = tasks['Promotion']['inputs']['artifacts']
  assert promotion['baseline_model']['taskOutputArtifact'] == {
      'producerTask': 'ServedBaseline', 'outputArtifactKey': 'baseline'}
  assert promotion['evaluator_blessing']['taskOutputArtifact'] == {
      'producerTask': 'Evaluator', 'outputArtifactKey': 'blessing'}
  # The serving directory is the component's parameter; a served night skips
  # every task after it (a trigger condition on its result), unless forced.
  params = tasks['ServedBaseline']['inputs']['parameters']
  assert params['serving_dir']['runtimeValue']['constantValue'] == {
      'stringValue': 'gs://test-bucket/serving'}
  assert params['force'] == {'componentInputParameter': vertex.FORCE_PARAMETER}
  for name in set(tasks) - {'ConversionLogExampleGen', 'ServedBaseline'}:
    condition = tasks[name]['triggerPolicy']['condition']
    assert "metadata['already_served']" in condition and '0.0' in condition, name


def test_every_task_runs_the_pipeline_image_with_dataflow_args(template):
  spec = _spec(template)['pipelineSpec']
  executors = spec['deploymentSpec']['executors']
  containers = {k[:-len('_executor')]: e['container'] for k, e in executors.items()
                if 'container' in e}
  assert len(containers) == 16 and all(c['image'] == IMAGE for c in containers.values())
  for beam_node in ('ConversionLogExampleGen', 'StatisticsGen', 'Transform',
                    'BulkInferrer', 'Evaluator'):
    args = containers[beam_node]['args']
    for flag in ('--runner=DataflowRunner', '--project=test-project',
                 '--region=europe-west4', '--temp_location=gs://test-bucket/tmp',
                 '--max_num_workers=7', f'--sdk_container_image={IMAGE}',
                 f'--dataflow_kms_key={KEY}'):
      assert flag in args, (beam_node, flag)
  # The schema generated beside the dataset spec, where deploy/Dockerfile puts it.
  schema = spec['root']['dag']['tasks']['ImportSchemaGen']['inputs']['parameters']
  assert schema['schema_file']['runtimeValue']['constantValue']['stringValue'] == \
      '/pipeline/datasets/synthetic_world/schema.pbtxt'


def test_student_trains_on_a_tpu_pool_and_the_teacher_on_cpu(template):
  spec = _spec(template)['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  executors = spec['deploymentSpec']['executors']
  for node in ('teacher', 'student'):
    args = executors[f'{node}_executor']['container']['args']
    assert 'tfx.extensions.google_cloud_ai_platform.trainer.executor.GenericExecutor' \
        in args
  student = _custom_config(tasks['student'])
  assert student['ai_platform_enable_vertex'] is True
  assert student['ai_platform_vertex_region'] == 'europe-west4'
  training = student['ai_platform_training_args']
  assert training['project'] == 'test-project'
  assert training['encryption_spec'] == {'kms_key_name': KEY}
  (pool,) = training['job_spec']['worker_pool_specs']
  assert pool['machine_spec'] == {'machine_type': 'ct5lp-hightpu-4t',
                                  'tpu_topology': '2x2'}
  assert pool['container_spec']['image_uri'] == TPU_IMAGE
  assert training['job_spec']['service_account'] == SA
  # The run_fn still gets the whole config.
  assert config_lib.from_json(student['config']).vertex.student.tpu_topology == '2x2'
  (teacher_pool,) = _custom_config(tasks['teacher'])[
      'ai_platform_training_args']['job_spec']['worker_pool_specs']
  assert teacher_pool['machine_spec'] == {'machine_type': 'n1-standard-16'}
  assert teacher_pool['container_spec']['image_uri'] == IMAGE


def test_sweep_template_runs_parallel_trials_on_vertex_training(tmp_path):
  path = str(tmp_path / 'sweep.json')
  assert cli.main(['compile', '--sweep', '--output', path] + sum(
      (['--set', o] for o in VERTEX + ['sweep.tune_fraction=0.1',
                                       'sweep.parallel_trials=4',
                                       'vertex.sweeps_dir=gs://test-bucket/sweeps']),
      [])) == 0
  spec = _spec(path)['pipelineSpec']
  tasks = spec['root']['dag']['tasks']
  assert {'tuner', 'SweepRecord', 'student'} <= set(tasks)
  assert 'SweepLookup' not in tasks
  args = spec['deploymentSpec']['executors']['tuner_executor']['container']['args']
  assert 'tfx.extensions.google_cloud_ai_platform.tuner.executor.Executor' in args
  tuner = tasks['tuner']['inputs']['parameters']
  tune_args = json.loads(tuner[standard_component_specs.TUNE_ARGS_KEY]['runtimeValue'][
      'constantValue']['stringValue'])
  assert tune_args == {'num_parallel_trials': 4}
  eval_args = json.loads(tuner[standard_component_specs.EVAL_ARGS_KEY]['runtimeValue'][
      'constantValue']['stringValue'])
  assert eval_args['splits'] == ['tune']
  custom = _custom_config(tasks['tuner'])
  assert custom['ai_platform_enable_vertex'] is True
  chief, workers = custom['ai_platform_tuning_args']['job_spec']['worker_pool_specs']
  assert chief['replica_count'] == 1 and workers['replica_count'] == 3
  assert workers['container_spec']['image_uri'] == TPU_IMAGE
  assert config_lib.from_json(custom['config']).sweep.parallel_trials == 4
  # The student trains with the Tuner's best; the sweep is recorded on GCS.
  assert 'tuner' in tasks['student']['dependentTasks']
  record = tasks['SweepRecord']['inputs']['parameters']['sweeps_dir']
  assert record['runtimeValue']['constantValue']['stringValue'] == \
      'gs://test-bucket/sweeps'
  splits = json.loads(tasks['BulkInferrer']['inputs']['parameters']['data_spec'][
      'runtimeValue']['constantValue']['stringValue'])
  assert splits['example_splits'] == ['train', 'eval', 'tune']


def test_aiplatform_loads_the_template(cfg, template):
  job = vertex.pipeline_job(cfg, template, credentials=AnonymousCredentials())
  assert 'student' in job.pipeline_spec['root']['dag']['tasks']
  assert job.runtime_config.parameters[vertex.SNAPSHOT_PARAMETER].string_value == ''


@pytest.mark.parametrize('missing', ['vertex.image', 'vertex.project',
                                     'vertex.dataflow.temp_location'])
def test_compile_without_a_required_key_names_it(missing, tmp_path, capsys):
  overrides = [o for o in VERTEX if not o.startswith(missing + '=')]
  with pytest.raises(SystemExit) as e:
    cli.main(['compile', '--output', str(tmp_path / 'p.json')] +
             sum((['--set', o] for o in overrides), []))
  assert e.value.code == 2 and missing in capsys.readouterr().err


# --- submit and schedule with the transport intercepted -----------------------


class _Done(grpc.Call, grpc.Future):
  """A completed unary call carrying `response`."""

  def __init__(self, response):
    self._response = response

  def result(self, timeout=None):
    return self._response

  def exception(self, timeout=None):
    return None

  def traceback(self, timeout=None):
    return None

  def add_done_callback(self, fn):
    fn(self)

  def cancel(self):
    return False

  def cancelled(self):
    return False

  def running(self):
    return False

  def done(self):
    return True

  def is_active(self):
    return False

  def time_remaining(self):
    return None

  def add_callback(self, callback):
    return False

  def initial_metadata(self):
    return ()

  def trailing_metadata(self):
    return ()

  def code(self):
    return grpc.StatusCode.OK

  def details(self):
    return ''


def _copy(message):
  """The message as the server would read it (through its wire bytes)."""
  return type(message).deserialize(type(message).serialize(message))


class _Capture(grpc.UnaryUnaryClientInterceptor):
  """Records each request as serialized for the wire; answers without a server."""

  def __init__(self):
    self.requests = []

  def intercept_unary_unary(self, continuation, details, request):
    del continuation  # never reaches the network
    sent = _copy(request)
    self.requests.append((details.method, sent))
    rpc = details.method.rsplit('/', 1)[-1]
    if rpc == 'CreatePipelineJob':
      response = _copy(sent.pipeline_job)
      response.name = f'{sent.parent}/pipelineJobs/{sent.pipeline_job_id}'
    elif rpc == 'CreateSchedule':
      response = _copy(sent.schedule)
      response.name = f'{sent.parent}/schedules/1'
    else:
      raise AssertionError(f'unexpected RPC {details.method}')
    return _Done(response)


@pytest.fixture
def wire():
  capture = _Capture()

  def channel(cls, host, credentials=None, **kwargs):
    del cls, credentials, kwargs
    assert host.startswith('europe-west4-aiplatform.googleapis.com')
    # A lazy channel to nowhere: it is never connected.
    return grpc.intercept_channel(grpc.insecure_channel('unix:///nonexistent.sock'),
                                  capture)

  transports = (pipeline_grpc.PipelineServiceGrpcTransport,
                schedule_grpc.ScheduleServiceGrpcTransport)
  with mock.patch.multiple(transports[0], create_channel=classmethod(channel)), \
      mock.patch.multiple(transports[1], create_channel=classmethod(channel)), \
      mock.patch.object(  # submit() checks the pipeline root's bucket over HTTP
          gcs_utils, 'create_gcs_bucket_for_pipeline_artifacts_if_it_does_not_exist',
          lambda **_: None), \
      mock.patch('google.auth.default',
                 side_effect=AssertionError('application default credentials used')):
    yield capture.requests


def _parameters(runtime_config):
  out = {}
  for k, v in runtime_config.parameters.items():
    pb = type(v).pb(v)  # proto-plus wraps the protobuf Value
    out[k] = getattr(pb, pb.WhichOneof('value'))
  return out


def _caching(pipeline_spec):
  return {t.get('cachingOptions', {}).get('enableCache', False)
          for t in dict(pipeline_spec)['root']['dag']['tasks'].values()}


def test_submit_force_reruns_a_served_night(cfg, template, wire):
  vertex.submit(cfg, template, credentials=AnonymousCredentials(), force=True)
  ((_, request),) = wire
  assert _parameters(request.pipeline_job.runtime_config) == {
      vertex.SNAPSHOT_PARAMETER: '', vertex.FORCE_PARAMETER: 1}


def test_submit_sends_the_template_service_account_labels_and_t(cfg, template, wire):
  name = vertex.submit(cfg, template, snapshot_time='2026-02-01T00:00:00Z',
                       credentials=AnonymousCredentials())
  ((method, request),) = wire
  assert method == '/google.cloud.aiplatform.v1.PipelineService/CreatePipelineJob'
  assert request.parent == 'projects/test-project/locations/europe-west4'
  assert name == f'{request.parent}/pipelineJobs/{request.pipeline_job_id}'
  job = request.pipeline_job
  assert job.service_account == SA
  assert dict(job.labels) == {'team': 'ads', 'env': 'test'}
  assert job.encryption_spec.kms_key_name == KEY
  # The template's force_rerun default (0) goes along: a served night skips.
  assert _parameters(job.runtime_config) == {
      vertex.SNAPSHOT_PARAMETER: '2026-02-01T00:00:00Z', vertex.FORCE_PARAMETER: 0}
  assert job.runtime_config.gcs_output_directory == 'gs://test-bucket/root'
  assert set(job.pipeline_spec['root']['dag']['tasks']) == set(
      _spec(template)['pipelineSpec']['root']['dag']['tasks'])
  assert _caching(job.pipeline_spec) == {False}


def test_schedule_is_nightly_in_its_time_zone_one_run_at_a_time(cfg, template, wire):
  name = vertex.schedule(cfg, template, credentials=AnonymousCredentials())
  ((method, request),) = wire
  assert method == '/google.cloud.aiplatform.v1.ScheduleService/CreateSchedule'
  assert name == 'projects/test-project/locations/europe-west4/schedules/1'
  schedule = request.schedule
  assert schedule.cron == 'TZ=Europe/Amsterdam 30 2 * * *'
  assert schedule.max_concurrent_run_count == 1
  assert schedule.display_name == 'kd-conversion-nightly'
  job = schedule.create_pipeline_job_request.pipeline_job
  assert job.service_account == SA
  assert dict(job.labels) == {'team': 'ads', 'env': 'test'}
  # T is left empty for every scheduled run: each resolves its own at start.
  assert _parameters(job.runtime_config) == {vertex.SNAPSHOT_PARAMETER: '',
                                             vertex.FORCE_PARAMETER: 0}
  assert 'student' in job.pipeline_spec['root']['dag']['tasks']
  assert _caching(job.pipeline_spec) == {False}


@pytest.mark.parametrize('fmt', ['parquet', 'csv', 'bigquery'])
def test_the_template_compiles_for_each_source(fmt, tmp_path):
  """A dataset of another shape, from files or from BigQuery: the ExampleGen
  task carries its spec, the schema is the one beside it in the image."""
  spec = app_installs.write_spec(str(tmp_path / 'dataset.yaml'),
                                 'tfrecord' if fmt == 'bigquery' else fmt)
  if fmt == 'bigquery':
    with open(spec) as f:
      text = f.read()
    text = text.replace(
        'format: tfrecord\n  clicks: {path: "taps/dt={date:%Y%m%d}"}\n'
        '  conversions: {path: "installs/dt={date:%Y%m%d}"}\n',
        'format: bigquery\n  project: test-project\n'
        '  clicks: {table: "test-project.ads.taps"}\n'
        '  conversions: {query: "SELECT * FROM `test-project.ads.installs`"}\n')
    assert 'format: bigquery' in text
    with open(spec, 'w') as f:
      f.write(text)
  path = str(tmp_path / 'pipeline.json')
  overrides = VERTEX + app_installs.OVERRIDES + [
      f'dataset_file={spec}', 'vertex.schema_path=/pipeline/app/schema.pbtxt']
  assert cli.main(['compile', '--output', path] + sum(
      (['--set', o] for o in overrides), [])) == 0
  tasks = _spec(path)['pipelineSpec']['root']['dag']['tasks']
  params = tasks['ConversionLogExampleGen']['inputs']['parameters']
  dataset = json.loads(params[example_gen_executor.DATASET_KEY]['runtimeValue'][
      'constantValue']['stringValue'])
  assert dataset['name'] == 'app_installs' and dataset['source']['format'] == fmt
  if fmt == 'bigquery':
    assert dataset['source']['clicks']['table'] == 'test-project.ads.taps'
  schema = tasks['ImportSchemaGen']['inputs']['parameters']['schema_file']
  assert schema['runtimeValue']['constantValue']['stringValue'] == \
      '/pipeline/app/schema.pbtxt'
