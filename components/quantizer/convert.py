"""Post-training quantization of the student to TFLite (docs/architecture.md §6).

Converts the student's raw-feature signature (serving features in by name, pConvs
out) in one of three modes:
  int8:          full-integer core: every FULLY_CONNECTED and GATHER (embedding)
                 runs with int8 weights and activations. Float only at the edges:
                 the Transform ops on raw inputs (log1p, z-score: quantizing a raw
                 price to int8 before its log would destroy it), and the tail that
                 turns the heads' log-rates into pConvs (exp and the window sum:
                 an int8 pConvs has one scale for rates from 0.001 to 5, so small
                 rates would round to zero and the NLL of a conversion would be
                 infinite). Selective quantization with TF's QuantizationDebugger
                 keeps exactly those ops float; calibration covers the tails.
  dynamic_range: int8 weights, float activations (no calibration).
  float16:       float16 weights.
Builtin TFLite ops only, checked.
"""

import dataclasses
import hashlib
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from models import export

MODES = ('int8', 'dynamic_range', 'float16')
# Op types that run in int8 in int8 mode: the model core, and the data movement
# between its layers. Only those downstream of the embedding GATHER are the core
# (int8_core_outputs): the CONCATENATIONs that gather ids and raw numerics before
# their transforms are not.
INT8_CORE = frozenset({'FULLY_CONNECTED', 'GATHER', 'RESHAPE', 'CONCATENATION'})
NO_DELEGATE = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
INPUT_PREFIX = 'serving_default_'  # TFMA strips exactly this prefix


class QuantizationError(RuntimeError):
  """The converted model breaks a contract or costs more than its bound."""


@dataclasses.dataclass(frozen=True)
class Op:
  name: str
  input_dtypes: List[np.dtype]
  outputs: List[str]  # output tensor names
  inputs: List[str] = dataclasses.field(default_factory=list)  # input tensor names


def raw_inputs(student_dir: str) -> Dict[str, tf.TensorSpec]:
  """The student's raw-feature signature's inputs by name, in its order: the
  serving contract (the dataset's serving features, [batch, 1] each)."""
  loaded = tf.saved_model.load(student_dir)
  return dict(loaded.signatures[export.RAW_SIGNATURE].structured_input_signature[1])


def raw_saved_model(student_dir: str, out_dir: str) -> str:
  """Re-saves the student's raw-feature signature as `serving_default`.

  TFLite names the inputs of a converted signature `<key>_<input>:0`; TFMA strips
  only `serving_default_`, so the converted signature must have that key for
  TFMA to feed inputs by feature name.
  """
  loaded = tf.saved_model.load(student_dir)
  tf.saved_model.save(loaded, out_dir, signatures={
      'serving_default': loaded.signatures[export.RAW_SIGNATURE]})
  return out_dir


def _converter(saved_dir: str) -> tf.lite.TFLiteConverter:
  # Always a fresh converter: the QuantizationDebugger mutates the one it gets.
  return tf.lite.TFLiteConverter.from_saved_model(saved_dir,
                                                  signature_keys=['serving_default'])


def interpreter(model: bytes, delegates: bool = False) -> tf.lite.Interpreter:
  """An interpreter; without delegates (as TFMA runs it) unless asked."""
  kwargs = {} if delegates else {'experimental_op_resolver_type': NO_DELEGATE}
  it = tf.lite.Interpreter(model_content=model, num_threads=1, **kwargs)
  it.allocate_tensors()
  return it


def op_table(model: bytes) -> List[Op]:
  """Every op with its input dtypes and output tensor names (builtin kernels)."""
  it = interpreter(model)
  tensors = {t['index']: t for t in it.get_tensor_details()}
  return [Op(op['op_name'], [tensors[i]['dtype'] for i in op['inputs'] if i >= 0],
             [tensors[i]['name'] for i in op['outputs']],
             [tensors[i]['name'] for i in op['inputs'] if i >= 0])
          for op in it._get_ops_details()]  # pylint: disable=protected-access


def graph_signature(model: bytes) -> str:
  """16 hex digits naming a TFLite graph's structure: its ops in order and every
  tensor's shape and type (weights' values and names left out). Two builds of
  one architecture and quantization share it, so their latency differs only by
  noise (the promotion's latency area is then not applicable)."""
  it = interpreter(model)
  tensors = {t['index']: t for t in it.get_tensor_details()}

  def shape(i):
    t = tensors[i]
    return (tuple(int(x) for x in t['shape']), str(np.dtype(t['dtype'])))
  parts = [(op['op_name'], tuple(shape(i) for i in op['inputs'] if i >= 0),
            tuple(shape(i) for i in op['outputs']))
           for op in it._get_ops_details()]  # pylint: disable=protected-access
  return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def int8_core_outputs(ops: Sequence[Op]) -> set:
  """Output names of the int8 core: INT8_CORE ops fed, through INT8_CORE ops
  only, by a GATHER (the embeddings, the numerics' concatenation with them, the
  FULLY_CONNECTEDs). Ops list in execution order, so one pass suffices."""
  core = set()
  for op in ops:
    if op.name not in INT8_CORE:
      continue
    if op.name == 'GATHER' or any(name in core for name in op.inputs):
      core.update(op.outputs)
  return core


def float_edge_nodes(float_model: bytes) -> List[str]:
  """Output names of every op outside the int8 core: what stays float."""
  ops = op_table(float_model)
  core = int8_core_outputs(ops)
  return [name for op in ops for name in op.outputs if name not in core]


def convert(saved_dir: str, mode: str,
            representative: Optional[Callable[[], Iterable[Dict[str, np.ndarray]]]] = None
            ) -> bytes:
  """The TFLite model of `saved_dir`'s serving_default in `mode` ('float32' too),
  stripped of what is neither weights nor contract (`strip`)."""
  conv = _converter(saved_dir)
  if mode == 'float32':
    return strip(conv.convert())
  conv.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == 'dynamic_range':
    return strip(conv.convert())
  if mode == 'float16':
    conv.target_spec.supported_types = [tf.float16]
    return strip(conv.convert())
  if mode != 'int8':
    raise ValueError(f'unknown quantization mode {mode!r}; expected one of {MODES}')
  if representative is None:
    raise ValueError('int8 mode needs a representative dataset')
  conv.representative_dataset = representative
  conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  # The float model with its tensor names: the denylist names the edge ops.
  options = tf.lite.experimental.QuantizationDebugOptions(
      denylisted_nodes=float_edge_nodes(_converter(saved_dir).convert()))
  debugger = tf.lite.experimental.QuantizationDebugger(converter=conv,
                                                       debug_options=options)
  return strip(debugger.get_nondebug_quantized_model())


def strip(model: bytes) -> bytes:
  """`model` without what is neither weights nor contract.

  Drops the names of internal tensors (the converter names them after the
  fused TF ops they came from), the model description and the converter's
  metadata (the minimum runtime version, the conversion options); the inputs'
  and the output's names and the signature, which TFMA and serving feed by,
  stay. TFLite's flatbuffer_utils reads and writes the model; what to drop is
  decided here, since the converter has no option for it.
  """
  from tensorflow.lite.tools import flatbuffer_utils  # pylint: disable=g-import-not-at-top
  m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  for graph in m.subgraphs:
    keep = set(graph.inputs) | set(graph.outputs)
    for i, tensor in enumerate(graph.tensors):
      if i not in keep:
        tensor.name = None
  for meta in m.metadata or []:
    m.buffers[meta.buffer].data = None
  m.metadata = None
  m.description = None
  return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def check(model: bytes, feature_names: Sequence[str], mode: str) -> Dict:
  """Checks the serving contract; returns the op summary.

  Raises:
    QuantizationError: inputs not exactly the serving features (TFMA would fill a
      missing one with -1 silently), not one output, Flex/custom ops, or (int8) a
      FULLY_CONNECTED or GATHER not running in int8.
  """
  it = interpreter(model)
  names = [d['name'] for d in it.get_input_details()]
  got = {n[len(INPUT_PREFIX):].split(':')[0] if n.startswith(INPUT_PREFIX) else n
         for n in names}
  if got != set(feature_names):
    raise QuantizationError(
        f'TFLite inputs {sorted(names)} are not the serving features: missing '
        f'{sorted(set(feature_names) - got)}, unexpected {sorted(got - set(feature_names))}')
  bad_shape = [d['name'] for d in it.get_input_details()
               if list(d['shape_signature']) not in ([-1, 1], [1, 1])]
  if bad_shape:
    raise QuantizationError(f'inputs {bad_shape} are not dense [batch, 1]')
  if len(it.get_output_details()) != 1:
    raise QuantizationError(f'{len(it.get_output_details())} outputs; the serving '
                            'contract is one output, pConvs')
  ops = op_table(model)
  foreign = sorted({op.name for op in ops if op.name.startswith('Flex') or
                    op.name in ('CUSTOM', 'DELEGATE')})
  if foreign:
    raise QuantizationError(f'non-builtin ops {foreign}')
  core = [op for op in ops if op.name in ('FULLY_CONNECTED', 'GATHER')]
  if mode == 'int8':
    not_int8 = [op.name for op in core if op.input_dtypes[0] != np.int8 or
                (op.name == 'FULLY_CONNECTED' and op.input_dtypes[1] != np.int8)]
    if not_int8 or not core:
      raise QuantizationError(f'int8 mode, but {not_int8 or "no"} FULLY_CONNECTED / '
                              'GATHER ops run in float')
  counts: Dict[str, int] = {}
  for op in ops:
    counts[op.name] = counts.get(op.name, 0) + 1
  return {'ops': counts, 'int8_core_ops': sum(
      1 for op in core if op.input_dtypes[0] == np.int8)}


def predict(model: bytes, rows: Dict[str, np.ndarray], batch: int = 4096) -> np.ndarray:
  """pConvs of a TFLite model on feature columns (batched, no delegates)."""
  it = interpreter(model)
  inputs = it.get_input_details()
  (output,) = it.get_output_details()
  n = len(next(iter(rows.values())))
  out = []
  for lo in range(0, n, batch):
    size = min(batch, n - lo)
    for d in inputs:
      it.resize_tensor_input(d['index'], [size, 1])
    it.allocate_tensors()
    for d in inputs:
      name = d['name'][len(INPUT_PREFIX):].split(':')[0]
      it.set_tensor(d['index'], rows[name][lo:lo + size].reshape(size, 1).astype(d['dtype']))
    it.invoke()
    out.append(it.get_tensor(output['index']).reshape(-1))
  return np.concatenate(out).astype(np.float64)


def write(model: bytes, model_dir: str) -> str:
  """Writes the model where TFMA looks: <model_dir>/tflite."""
  tf.io.gfile.makedirs(model_dir)
  path = os.path.join(model_dir, 'tflite')
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(model)
  return path
