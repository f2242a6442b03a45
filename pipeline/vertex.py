"""Vertex AI Pipelines: compile, submit and schedule the one `create_pipeline`.

A thin runner (docs/architecture.md §8): everything cloud-specific is derived here
from the `vertex` config section; the DAG is the same as the local one. The teachers and
students train on Vertex Training through the TFX Google Cloud extension Trainer
(worker pools from config: the student's is a TPU slice); Beam components run on
Dataflow with workers that import this package from the pipeline image.

Nothing here talks to Google Cloud until `submit` or `schedule` is called, and
both take explicit credentials (tests pass anonymous ones and intercept the
transport).
"""

import os
from typing import Any, Dict, List

from google.cloud import aiplatform
from tfx import v1 as tfx
from tfx.orchestration import data_types
from tfx.extensions.google_cloud_ai_platform.tuner import executor as cloud_tuner
from tfx.v1.extensions import google_cloud_ai_platform as gcp

import config as config_lib
from pipeline import pipeline as pipeline_lib

SNAPSHOT_PARAMETER = 'snapshot_time'
# 1 reruns a night whose T is already served (else the run skips after T).
FORCE_PARAMETER = 'force_rerun'


class VertexConfigError(config_lib.ConfigError):
  """A vertex.* key a Vertex command needs is missing."""


def require(cfg: config_lib.Config, *keys: str) -> None:
  """Raises naming the first of `keys` (dotted, under vertex) left empty."""
  for key in keys:
    value: Any = cfg.vertex
    for part in key.split('.'):
      value = getattr(value, part)
    if not value:
      raise VertexConfigError(f'vertex.{key}: required for Vertex commands; set '
                              f'it in the config or with --set vertex.{key}=...')


def beam_args(cfg: config_lib.Config) -> List[str]:
  """DataflowRunner args for every Beam component (and harmless for the rest).

  Workers run the pipeline image (`sdk_container_image`), so they import this
  package (Transform's preprocessing_fn, the ExampleGen's join) like the
  launcher does.
  """
  v, d = cfg.vertex, cfg.vertex.dataflow
  require(cfg, 'project', 'region', 'image', 'dataflow.temp_location')
  args = [
      '--runner=DataflowRunner',
      f'--project={v.project}',
      f'--region={d.region or v.region}',
      f'--temp_location={d.temp_location}',
      f'--machine_type={d.machine_type}',
      f'--max_num_workers={d.max_num_workers}',
      f'--sdk_container_image={d.worker_image or v.image}',
      '--experiments=use_runner_v2',
  ]
  if d.service_account:
    args.append(f'--service_account_email={d.service_account}')
  if d.subnetwork:
    args += [f'--subnetwork={d.subnetwork}', '--no_use_public_ips']
  if v.encryption_key:
    args.append(f'--dataflow_kms_key={v.encryption_key}')
  return args


def worker_pool(pool: config_lib.WorkerPoolConfig, default_image: str) -> Dict:
  """A Vertex CustomJob worker pool spec (aiplatform_v1 WorkerPoolSpec fields)."""
  machine: Dict[str, Any] = {'machine_type': pool.machine_type}
  if pool.accelerator_type:
    machine['accelerator_type'] = pool.accelerator_type
    machine['accelerator_count'] = pool.accelerator_count
  if pool.tpu_topology:
    machine['tpu_topology'] = pool.tpu_topology
  return {
      'machine_spec': machine,
      'replica_count': pool.replica_count,
      # The Trainer extension overwrites the command with TFX's run_executor;
      # the image must hold TFX 1.16 and this package.
      'container_spec': {'image_uri': pool.image or default_image,
                         'env': [{'name': 'TF_USE_LEGACY_KERAS', 'value': '1'}]},
  }


def training_custom_config(cfg: config_lib.Config, node: str) -> Dict[str, Any]:
  """The Google Cloud extension Trainer's custom_config for node `teacher` or
  `student`: a Vertex CustomJob on that node's worker pool."""
  v = cfg.vertex
  require(cfg, 'project', 'region', 'image', 'pipeline_root')
  pool = getattr(v, node)
  job_spec: Dict[str, Any] = {
      'worker_pool_specs': [worker_pool(pool, v.image)],
      'base_output_directory': {
          'output_uri_prefix': os.path.join(v.pipeline_root, 'training', node)},
  }
  if v.service_account:
    job_spec['service_account'] = v.service_account
  training_args: Dict[str, Any] = {
      'project': v.project,
      'display_name': f'{cfg.pipeline_name}-{node}',
      'labels': dict(v.labels),
      'job_spec': job_spec,
  }
  if v.encryption_key:
    training_args['encryption_spec'] = {'kms_key_name': v.encryption_key}
  return {
      gcp.ENABLE_VERTEX_KEY: True,
      gcp.VERTEX_REGION_KEY: v.region,
      gcp.TRAINING_ARGS_KEY: training_args,
  }


def tuner_custom_config(cfg: config_lib.Config) -> Dict[str, Any]:
  """The Google Cloud extension Tuner's custom_config: one Vertex Training job
  whose chief (pool 0) and sweep.parallel_trials - 1 workers (pool 1) each run
  trials on the student's worker pool, sharing KerasTuner's oracle on the chief."""
  config = training_custom_config(cfg, pipeline_lib.STUDENT)
  args = dict(config.pop(gcp.TRAINING_ARGS_KEY))
  job_spec = dict(args['job_spec'])
  chief = job_spec['worker_pool_specs'][0]
  pools = [chief]
  if cfg.sweep.parallel_trials > 1:
    pools.append({**chief, 'replica_count': cfg.sweep.parallel_trials - 1})
  job_spec['worker_pool_specs'] = pools
  job_spec['base_output_directory'] = {'output_uri_prefix': os.path.join(
      cfg.vertex.pipeline_root, 'training', pipeline_lib.TUNER)}
  args['job_spec'] = job_spec
  args['display_name'] = f'{cfg.pipeline_name}-{pipeline_lib.TUNER}'
  return {**config, cloud_tuner.TUNING_ARGS_KEY: args}


def sweeps_dir(cfg: config_lib.Config) -> str:
  """vertex.sweeps_dir, or <vertex.pipeline_root>/sweeps."""
  return cfg.vertex.sweeps_dir or os.path.join(cfg.vertex.pipeline_root, 'sweeps')


# Where deploy/Dockerfile puts the repository inside the image.
IMAGE_ROOT = '/pipeline'


def schema_path(cfg: config_lib.Config) -> str:
  """vertex.schema_path, or the generated schema beside the dataset spec inside
  the image (it must be current: `python -m pipeline.cli schema --check`)."""
  if cfg.vertex.schema_path:
    return cfg.vertex.schema_path
  spec = cfg.dataset_file
  if not spec or os.path.isabs(spec) or spec.startswith('..'):
    raise config_lib.ConfigError(
        'vertex.schema_path: the dataset spec is not inside the repository, so '
        'the image does not carry its schema; set vertex.schema_path')
  return os.path.join(IMAGE_ROOT, os.path.dirname(os.path.normpath(spec)),
                      'schema.pbtxt')


def build(cfg: config_lib.Config, sweep: bool = False):
  """The pipeline for Vertex: T a run-time parameter, Dataflow, Vertex Training
  (`sweep`: the sweep run, its trials in parallel on Vertex Training)."""
  v = cfg.vertex
  require(cfg, 'data_root', 'serving_dir', 'pipeline_root')
  # T is left to run time (docs/architecture.md §2): an empty value makes the
  # ExampleGen resolve it by window.snapshot_policy when the run starts, so one compiled
  # template serves every night.
  snapshot_time = data_types.RuntimeParameter(name=SNAPSHOT_PARAMETER, ptype=str,
                                              default='')
  force = data_types.RuntimeParameter(name=FORCE_PARAMETER, ptype=int, default=0)
  return pipeline_lib.create_pipeline(
      cfg, pipeline_root=v.pipeline_root, data_root=v.data_root,
      schema_path=schema_path(cfg), serving_dir=v.serving_dir,
      beam_pipeline_args=beam_args(cfg), snapshot_time=snapshot_time,
      force=force, enable_cache=cfg.enable_cache,
      trainer_custom_configs={node: training_custom_config(cfg, node)
                              for node in pipeline_lib.TRAINER_IDS},
      sweep=sweep, sweeps_dir=sweeps_dir(cfg),
      tuner_custom_config=tuner_custom_config(cfg) if sweep else None)


def compile_pipeline(cfg: config_lib.Config, output_path: str,
                     sweep: bool = False) -> str:
  """Compiles the PipelineJob JSON (offline); returns its path (`sweep`: the
  sweep run's template)."""
  require(cfg, 'image')
  out_dir, name = os.path.split(os.path.abspath(output_path))
  os.makedirs(out_dir, exist_ok=True)
  runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
      config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
          default_image=cfg.vertex.image),
      output_dir=out_dir, output_filename=name)
  # The default must be baked in: TFX does not copy RuntimeParameter.default
  # into the template, and a schedule would otherwise have no value to send.
  runner.run(build(cfg, sweep), parameter_values={SNAPSHOT_PARAMETER: '',
                                           FORCE_PARAMETER: 0})
  return os.path.join(out_dir, name)


def _init(cfg: config_lib.Config, credentials):
  require(cfg, 'project', 'region')
  aiplatform.init(project=cfg.vertex.project, location=cfg.vertex.region,
                  credentials=credentials)
  return aiplatform


def pipeline_job(cfg: config_lib.Config, template_path: str,
                 snapshot_time: str = '', credentials=None, display_name: str = '',
                 force: bool = False):
  """An aiplatform.PipelineJob of the compiled template.

  Args:
    cfg: the validated config (vertex section).
    template_path: the compiled JSON.
    snapshot_time: T; '' leaves it to the run (the nightly default).
    credentials: google.auth credentials; None: application default.
    display_name: the job's name in the console.
    force: rerun even if T is already served (else the template's default, 0).
  """
  aiplatform = _init(cfg, credentials)
  v = cfg.vertex
  parameters = {SNAPSHOT_PARAMETER: snapshot_time or ''}
  if force:
    parameters[FORCE_PARAMETER] = 1
  return aiplatform.PipelineJob(
      display_name=display_name or cfg.pipeline_name,
      template_path=template_path, pipeline_root=v.pipeline_root,
      parameter_values=parameters,
      # Every night has the same (empty) T parameter: Vertex caching would reuse
      # last night's ExampleGen output, so it is off unless asked for.
      enable_caching=cfg.enable_cache,
      labels=dict(v.labels), encryption_spec_key_name=v.encryption_key or None,
      project=v.project, location=v.region, credentials=credentials)


def submit(cfg: config_lib.Config, template_path: str, snapshot_time: str = '',
           credentials=None, force: bool = False) -> str:
  """Submits one run; returns the job's resource name."""
  job = pipeline_job(cfg, template_path, snapshot_time, credentials, force=force)
  job.submit(service_account=cfg.vertex.service_account or None,
             network=cfg.vertex.network or None)
  return job.resource_name


def cron(cfg: config_lib.Config) -> str:
  """The schedule's cron with its time zone (Vertex reads `TZ=<zone> <cron>`)."""
  s = cfg.vertex.schedule
  return f'TZ={s.time_zone} {s.cron}'


def schedule(cfg: config_lib.Config, template_path: str, credentials=None) -> str:
  """Creates the nightly PipelineJobSchedule; returns its resource name.

  The schedule copies the template job's parameters into every run, so the
  template job has T empty: each night resolves its own T when it starts.
  """
  s = cfg.vertex.schedule
  job = pipeline_job(cfg, template_path, '', credentials,
                     display_name=f'{cfg.pipeline_name}-nightly-run')
  sched = aiplatform.PipelineJobSchedule(
      pipeline_job=job, display_name=s.display_name or f'{cfg.pipeline_name}-nightly',
      project=cfg.vertex.project, location=cfg.vertex.region, credentials=credentials)
  sched.create(cron=cron(cfg), max_concurrent_run_count=s.max_concurrent_runs,
               max_run_count=s.max_run_count or None,
               service_account=cfg.vertex.service_account or None,
               network=cfg.vertex.network or None)
  return sched.resource_name
