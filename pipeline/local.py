"""The local runner: BeamDagRunner, SQLite ML Metadata under the output root."""

import dataclasses
import os
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration import metadata
from tfx.orchestration.beam import beam_dag_runner
from tfx.orchestration.portable.mlmd import execution_lib

import config as config_lib
from config import dataset as dataset_lib
from pipeline import pipeline as pipeline_lib


@dataclasses.dataclass(frozen=True)
class LocalPaths:
  root: str  # <output_root>/<pipeline_name>
  pipeline_root: str
  metadata: str  # the SQLite ML Metadata file
  data_root: str
  serving_dir: str
  sweeps_dir: str
  schema: str  # the dataset's TFDV schema, generated from its spec

  @classmethod
  def from_config(cls, cfg: config_lib.Config) -> 'LocalPaths':
    root = cfg.local_root()
    return cls(root=root, pipeline_root=os.path.join(root, 'root'),
               metadata=os.path.join(root, 'metadata.sqlite'),
               data_root=os.path.abspath(cfg.paths.data_root),
               serving_dir=os.path.abspath(cfg.paths.serving_dir),
               sweeps_dir=os.path.abspath(cfg.paths.sweeps_dir),
               schema=os.path.join(root, 'schema', cfg.dataset.name, 'schema.pbtxt'))


def write_schema(cfg: config_lib.Config, path: str) -> str:
  """Writes the dataset's schema, generated from its spec, to `path` (unless it
  is there already): a local run never reads a schema kept beside the spec."""
  text = dataset_lib.schema_text(cfg.dataset)
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return path
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)
  return path


def build(cfg: config_lib.Config, snapshot_time: Optional[str] = None,
          bootstrap: bool = False, force: bool = False,
          sweep: bool = False) -> tfx.dsl.Pipeline:
  """The pipeline with local paths, SQLite metadata and DirectRunner args
  (`sweep`: a sweep run, pipeline.create_pipeline)."""
  paths = LocalPaths.from_config(cfg)
  return pipeline_lib.create_pipeline(
      cfg, pipeline_root=paths.pipeline_root, data_root=paths.data_root,
      schema_path=write_schema(cfg, paths.schema), serving_dir=paths.serving_dir,
      bootstrap=bootstrap,
      metadata_connection_config=tfx.orchestration.metadata
      .sqlite_metadata_connection_config(paths.metadata),
      beam_pipeline_args=cfg.beam.args(), snapshot_time=snapshot_time,
      enable_cache=cfg.enable_cache, force=force, sweep=sweep,
      sweeps_dir=paths.sweeps_dir)


def run(cfg: config_lib.Config, snapshot_time: Optional[str] = None,
        bootstrap: bool = False, force: bool = False, sweep: bool = False) -> str:
  """Runs the DAG with BeamDagRunner; returns the ML Metadata path."""
  beam_dag_runner.BeamDagRunner().run(build(cfg, snapshot_time, bootstrap, force,
                                            sweep))
  return LocalPaths.from_config(cfg).metadata


def _store(metadata_path: str):
  return metadata_store.MetadataStore(
      tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))


def pipeline_runs(metadata_path: str, pipeline_name: str) -> List[Dict]:
  """Every run of the pipeline, oldest first: its run id (the pipeline_run
  context's name), start (ms since the epoch) and executions in order (node id,
  state, wall seconds, execution id)."""
  store = _store(metadata_path)
  pipeline_ctx = store.get_context_by_type_and_name('pipeline', pipeline_name)
  if pipeline_ctx is None:
    return []
  type_names = {t.id: t.name for t in store.get_context_types()}
  runs: Dict[int, list] = {}
  run_ctx: Dict[int, object] = {}
  for e in store.get_executions_by_context(pipeline_ctx.id):
    ctxs = store.get_contexts_by_execution(e.id)
    node = next((c.name.split('.', 1)[-1] for c in ctxs
                 if type_names[c.type_id] == 'node'), '?')
    for c in ctxs:
      if type_names[c.type_id] == 'pipeline_run':
        runs.setdefault(c.id, []).append((e, node))
        run_ctx[c.id] = c
  out = []
  for ctx_id in sorted(runs, key=lambda r: run_ctx[r].create_time_since_epoch):
    out.append({
        'run_id': run_ctx[ctx_id].name,
        'start_ms': run_ctx[ctx_id].create_time_since_epoch,
        'executions': [{
            'node': node,
            'state': metadata_store_pb2.Execution.State.Name(e.last_known_state),
            'seconds': (e.last_update_time_since_epoch
                        - e.create_time_since_epoch) / 1000,
            'execution_id': e.id,
        } for e, node in sorted(runs[ctx_id],
                                key=lambda x: x[0].create_time_since_epoch)]})
  return out


def node_executions(metadata_path: str, pipeline_name: str) -> List[Dict]:
  """The latest run's executions in order: node id, state, wall seconds, id."""
  runs = pipeline_runs(metadata_path, pipeline_name)
  return runs[-1]['executions'] if runs else []


def node_outputs(metadata_path: str, pipeline_name: str, node_id: str,
                 execution_id: Optional[int] = None) -> Dict:
  """Output artifacts (TFX Artifacts) by key of the node's latest execution (or
  of the given execution), as TFX's execution_lib reads them."""
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(metadata_path)) as m:
    ctx = m.store.get_context_by_type_and_name('node', f'{pipeline_name}.{node_id}')
    if ctx is None:
      return {}
    executions = m.store.get_executions_by_context(ctx.id)
    if execution_id is not None:
      executions = [e for e in executions if e.id == execution_id]
    if not executions:
      return {}
    latest = max(executions, key=lambda e: e.id)
    return {key: list(found) for key, found in
            execution_lib.get_output_artifacts(m, latest.id).items()}


def custom_property(artifact, name: str, default=None):
  """A custom property's value, whatever its type (TFX's
  Artifact.get_custom_property), or `default` when the artifact has none."""
  value = artifact.get_custom_property(name)
  return default if value is None else value
