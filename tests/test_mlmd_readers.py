"""Reading a node's outputs and their custom properties back from ML Metadata
(pipeline/local.py) through TFX's execution_lib and Artifact API, on a store
written here as TFX's launcher writes one (no pipeline run)."""

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.types import standard_artifacts

from components import artifacts
from pipeline import local

PIPELINE = 'p'


def _publish(m, node, outputs):
  """One execution of `node` with `outputs` ({key: [TFX Artifact]}); its id."""
  store = m.store
  ctx_type = store.put_context_type(metadata_store_pb2.ContextType(name='node'))
  ctx = store.get_context_by_type_and_name('node', f'{PIPELINE}.{node}')
  if ctx is None:
    (ctx_id,) = store.put_contexts([metadata_store_pb2.Context(
        type_id=ctx_type, name=f'{PIPELINE}.{node}')])
  else:
    ctx_id = ctx.id
  exec_type = store.put_execution_type(metadata_store_pb2.ExecutionType(name=node))
  (execution_id,) = store.put_executions([metadata_store_pb2.Execution(
      type_id=exec_type, last_known_state=metadata_store_pb2.Execution.COMPLETE)])
  store.put_attributions_and_associations(
      [], [metadata_store_pb2.Association(context_id=ctx_id, execution_id=execution_id)])
  for key, found in outputs.items():
    for i, a in enumerate(found):
      type_id = store.put_artifact_type(a.artifact_type)
      a.type_id = type_id
      a.mlmd_artifact.state = metadata_store_pb2.Artifact.LIVE
      (a.id,) = store.put_artifacts([a.mlmd_artifact])
      event = metadata_store_pb2.Event(artifact_id=a.id, execution_id=execution_id,
                                       type=metadata_store_pb2.Event.OUTPUT)
      event.path.steps.add().key = key
      event.path.steps.add().index = i
      store.put_events([event])
  return execution_id


def test_node_outputs_are_tfx_artifacts_with_their_custom_properties(tmp_path):
  path = str(tmp_path / 'metadata.sqlite')
  examples = standard_artifacts.Examples()
  examples.uri = '/x/examples'
  examples.split_names = '["train", "eval"]'
  examples.set_string_custom_property('snapshot_time', '2026-01-16T00:00:00+00:00')
  examples.set_int_custom_property('eval_examples', 1234)
  result = artifacts.GateResult()
  result.uri = '/x/result'
  result.set_float_custom_property('gap_closed', 0.75)
  with metadata.Metadata(metadata.sqlite_metadata_connection_config(path)) as m:
    first = _publish(m, 'ExampleGen', {'examples': [examples], 'result': [result]})
    newer = standard_artifacts.Examples()
    newer.uri = '/x/newer'
    second = _publish(m, 'ExampleGen', {'examples': [newer]})

  out = local.node_outputs(path, PIPELINE, 'ExampleGen', first)
  (got,) = out['examples']
  assert got.uri == '/x/examples' and got.split_names == '["train", "eval"]'
  assert local.custom_property(got, 'snapshot_time') == '2026-01-16T00:00:00+00:00'
  assert local.custom_property(got, 'eval_examples') == 1234
  assert local.custom_property(got, 'missing') is None
  assert local.custom_property(got, 'missing', 'none') == 'none'
  assert local.custom_property(out['result'][0], 'gap_closed') == 0.75
  # Without an execution id: the node's latest execution.
  latest = local.node_outputs(path, PIPELINE, 'ExampleGen')
  assert [a.uri for a in latest['examples']] == ['/x/newer'] and second > first
  assert local.node_outputs(path, PIPELINE, 'Nothing') == {}
