"""Exported signatures: serialized tf.Example in, rates out.

See docs/architecture.md §2 and §5.

The Transform graph is embedded (the Keras model tracks the TFT layer, so its
assets are saved with the model).
"""

import dataclasses
import hashlib
import json
import os
import tempfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import h5py
import tensorflow as tf

from config.dataset import DatasetSpec
from models import features as features_lib
from models import losses
from models import panel_calibration
from models import serving_graph
from models import towers
from schemas import columns

SERVING_SIGNATURE = 'serving_default'
PREDICT_SIGNATURE = 'predict'  # the BulkInferrer's: window rates and the hint
RAW_SIGNATURE = 'raw_features'  # the Quantizer's: raw serving features -> pConvs
PCONVS = 'pconvs'
HINT_OUTPUT = 'hint'


def rate_outputs(window_names: Sequence[str]) -> Tuple[str, ...]:
  """The window rates' output names (`rate_<window>`)."""
  return columns.window_columns('rate', window_names)


def observability_outputs(window_names: Sequence[str]) -> Tuple[str, ...]:
  """The teacher's observability outputs (predict signature; see
  teacher_observability)."""
  return columns.window_columns('observability', window_names)


def observed_exposure_outputs(window_names: Sequence[str]) -> Tuple[str, ...]:
  return columns.window_columns('observed_exposure', window_names)
SUMMARY_FILE = 'training_summary.json'
# A quantized model artifact keeps its float student here (the Quantizer), with
# the student's training-time weights (before the export's embedding rescale)
# under WARM_START_FILE for the next night's warm start.
FLOAT_STUDENT_DIR = 'float_student'
WARM_START_FILE = os.path.join('warm_start', 'student.h5')


def warm_start_weights(base_model: str) -> str:
  """The warm-start weights of a blessed quantized model, from the path the
  Trainer gives run_fn as `base_model` (`<artifact>/Format-Serving`)."""
  return os.path.join(os.path.dirname(base_model.rstrip('/')), FLOAT_STUDENT_DIR,
                      WARM_START_FILE)


def _save_weights(network: tf.keras.Model, path: str) -> None:
  """Keras HDF5 weights (loadable by layer name) to a local or gs:// path."""
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, os.path.basename(path))
    network.save_weights(local, save_format='h5')
    tf.io.gfile.makedirs(os.path.dirname(path))
    tf.io.gfile.copy(local, path, overwrite=True)


@dataclasses.dataclass(frozen=True)
class WarmStart:
  """What a warm start loaded: layers with weights, by name."""
  path: str
  matched: Tuple[str, ...]  # loaded: same name, same weight shapes
  skipped: Tuple[str, ...]  # kept their initialisation

  def to_json(self) -> Dict:
    return {'path': self.path, 'layers_matched': len(self.matched),
            'layers_with_weights': len(self.matched) + len(self.skipped),
            'skipped': list(self.skipped)}


def _saved_shapes(h5_path: str) -> Dict[str, List[tuple]]:
  """Weight shapes per layer name in a Keras HDF5 weights file."""
  def text(v):
    return v.decode('utf8') if isinstance(v, bytes) else str(v)
  with h5py.File(h5_path, 'r') as f:
    return {text(layer): [tuple(f[text(layer)][text(w)].shape)
                          for w in f[text(layer)].attrs['weight_names']]
            for layer in f.attrs['layer_names']}


def load_warm_start(network: tf.keras.Model, path: str) -> Optional[WarmStart]:
  """Loads weights saved by save_student into `network`, layer by layer name.

  Layers the saved student did not have (e.g. a KD student's auxiliary heads
  after a production-recipe bootstrap) or whose shapes changed keep their
  initialisation: Keras' `load_weights(by_name=True, skip_mismatch=True)` skips
  them with nothing but a log line, so which layers matched is worked out here,
  by the same rule (name and every weight's shape), and returned. Returns None
  when there is nothing at `path`.
  """
  if not tf.io.gfile.exists(path):
    return None
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, os.path.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    saved = _saved_shapes(local)
    network.load_weights(local, by_name=True, skip_mismatch=True)
  matched, skipped = [], []
  for layer in network.layers:
    if not layer.weights:
      continue
    shapes = [tuple(w.shape) for w in layer.weights]
    (matched if saved.get(layer.name) == shapes else skipped).append(layer.name)
  return WarmStart(path, tuple(matched), tuple(skipped))


def window_rates(log_rates: tf.Tensor,
                 window_names: Sequence[str]) -> Dict[str, tf.Tensor]:
  """pConvs [B] and one [B] rate per window from [B, W] log-rates."""
  rates = tf.exp(log_rates)
  out = {PCONVS: tf.reduce_sum(rates, axis=1)}
  for i, name in enumerate(rate_outputs(window_names)):
    out[name] = rates[:, i]
  return out


def example_signature(model: tf.keras.Model, tft_layer,
                      features: Sequence[columns.Column],
                      outputs: Callable[..., Dict[str, tf.Tensor]],
                      extra_columns: Sequence[columns.Column] = ()):
  """A tf.function from serialized tf.Examples to `outputs(network outputs)`, or
  `outputs(network outputs, raw)` with `extra_columns` (parsed beside the
  features: `raw` holds them)."""
  feature_names = features_lib.names(features)
  spec = features_lib.raw_feature_spec(list(features) + list(extra_columns))

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve(serialized):
    raw = tf.io.parse_example(serialized, spec)
    transformed = tft_layer({n: raw[n] for n in feature_names})
    net = model({n: transformed[n] for n in feature_names}, training=False)
    return outputs(net, raw) if extra_columns else outputs(net)
  return serve


def raw_feature_function(model: tf.keras.Model, tft_layer,
                         features: Sequence[columns.Column]):
  """A tf.function from raw serving features to pConvs, for TFLite conversion.

  Inputs are named exactly like the features and are dense [batch, 1] tensors
  (int64 ids, float32 numerics), so TFMA can feed a TFLite model from examples
  by name; the one output is pConvs [batch, 1]. It is the lean serving graph
  (models/serving_graph.py): the same function as the Transform layer plus the
  network, with every per-feature step vectorised. The graph holds a copy of the
  network's weights, tracked on the network so the SavedModel saves them.
  """
  model.lean_serving = serving_graph.LeanServing(model, tft_layer, features,
                                                 output_name=PCONVS)
  return model.lean_serving.raw_features


def teacher_observability(outputs: Dict[str, tf.Tensor], raw: Dict[str, tf.Tensor],
                          dataset: DatasetSpec,
                          panel_tables=None) -> Dict[str, tf.Tensor]:
  """The teacher's per-click observability outputs from its network outputs and
  the example's prior observability, exposures and panel flag.

  observability_<w>: sigmoid(logit(p_w) + d_w) off the panel, 1 on it, with p_w the
    prior's mature share for the click (`prior_observability_<w>`, which the
    ExampleGen writes; times the panel calibration's ratios with `panel_tables`)
    and d_w the observability head's logit shift (0 without the head): the
    estimate scored against the world's true_observability_<w>.
  observed_exposure_<w>: the offset of the teacher's own likelihood as of T
    (losses.teacher_offsets): the observed exposure it believes in.
  """
  w = dataset.window_names()

  def column(names):
    return tf.concat([tf.cast(raw[n], tf.float32) for n in names], axis=1)
  share = column(columns.prior_observability(w))
  panel = (raw[dataset.panel] if dataset.panel else
           tf.zeros_like(raw[columns.exposures(w)[0]], tf.int64))
  targets = {losses.EXPOSURES: column(columns.exposures(w)),
             losses.OBSERVED_EXPOSURES: column(columns.observed_exposures(w)),
             losses.IN_PANEL: panel}
  if panel_tables is not None:
    # As in training: the calibrated offsets, and the mature share they imply.
    keys = panel_calibration.PanelKeys.of(dataset)
    targets[losses.OBSERVED_EXPOSURES] = panel_calibration.apply(
        panel_tables, keys, raw, panel, targets[losses.OBSERVED_EXPOSURES],
        targets[losses.EXPOSURES])
    share = tf.minimum(share * panel_calibration.lookup_ratios(panel_tables, keys, raw),
                       1.0)
  share = losses.clip_share(share)
  shift = outputs.get(towers.OBS_LOGIT_SHIFT, tf.zeros_like(share))
  observability = tf.where(tf.cast(panel, tf.bool), 1.0,
                           tf.sigmoid(losses.logit(share) + shift))
  observed = losses.teacher_offsets(targets, outputs)
  out = {}
  for i, (q, o) in enumerate(zip(observability_outputs(w),
                                 observed_exposure_outputs(w))):
    out[q] = observability[:, i]
    out[o] = observed[:, i]
  return out


def observability_columns(dataset: DatasetSpec) -> Tuple[str, ...]:
  """What the teacher's observability outputs read from an example besides
  features."""
  w = dataset.window_names()
  keys = ()
  if dataset.meanings.panel_calibration_groups and dataset.panel:
    keys = panel_calibration.PanelKeys.of(dataset).key_columns()
  return tuple(dict.fromkeys(
      columns.exposures(w) + columns.observed_exposures(w) +
      columns.prior_observability(w) + ((dataset.panel,) if dataset.panel else ()) +
      keys))


def save_teacher(network: tf.keras.Model, tft_layer, export_dir: str,
                 summary: Dict, dataset: DatasetSpec, panel_tables=None) -> None:
  """Saves the teacher with its serving and predict signatures and its summary.

  Args:
    network: the teacher (towers.build_teacher).
    tft_layer: the Transform layer its features go through.
    export_dir: where the SavedModel goes.
    summary: the training summary (assets.extra).
    dataset: the dataset spec (features, windows, the columns with a meaning).
    panel_tables: the panel calibration's tables the teacher trained with
      (model.teacher_panel_calibration), or None.
  """
  network.tft_layer = tft_layer  # tracked: the transform assets are saved too
  features = dataset.teacher_features()
  w = dataset.window_names()
  serving = example_signature(network, tft_layer, features,
                              lambda o: window_rates(o[towers.LOG_RATES], w))
  rates = rate_outputs(w)

  def predict_outputs(o, raw):
    out = {k: v for k, v in window_rates(o[towers.LOG_RATES], w).items()
           if k in rates}
    out[HINT_OUTPUT] = o[towers.HINT]
    out.update(teacher_observability(o, raw, dataset, panel_tables))
    return out
  names = set(features_lib.names(features))
  extra = [dataset.column(c) for c in observability_columns(dataset)
           if c not in names]
  predict = example_signature(network, tft_layer, features, predict_outputs, extra)
  tf.saved_model.save(network, export_dir, signatures={
      SERVING_SIGNATURE: serving, PREDICT_SIGNATURE: predict})
  write_summary(export_dir, summary)


def save_student(network: tf.keras.Model, tft_layer, export_dir: str,
                 summary: Dict, dataset: DatasetSpec) -> None:
  """Saves the student: serving (tf.Example in; pConvs and window rates out) and
  raw-feature (serving features in by name; pConvs out) signatures.

  Embedding tables are rescaled first (exact in float, see
  towers.rescale_embeddings) so that the INT8 conversion keeps their precision.
  """
  features = dataset.serving_features()
  w = dataset.window_names()
  # Training-scale weights first: the next night continues from these.
  _save_weights(network, os.path.join(export_dir, WARM_START_FILE))
  towers.rescale_embeddings(network, features)
  network.tft_layer = tft_layer
  serving = example_signature(network, tft_layer, features,
                              lambda o: window_rates(o[towers.LOG_RATES], w))
  raw = raw_feature_function(network, tft_layer, features)
  tf.saved_model.save(network, export_dir, signatures={
      SERVING_SIGNATURE: serving, RAW_SIGNATURE: raw})
  write_summary(export_dir, summary)


def write_summary(export_dir: str, summary: Dict) -> None:
  """Writes the training summary where users and gates read it (assets.extra)."""
  extra = os.path.join(export_dir, 'assets.extra')
  tf.io.gfile.makedirs(extra)
  with tf.io.gfile.GFile(os.path.join(extra, SUMMARY_FILE), 'w') as f:
    json.dump(summary, f, indent=1, sort_keys=True)


def read_summary(export_dir: str) -> Dict:
  with tf.io.gfile.GFile(os.path.join(export_dir, 'assets.extra', SUMMARY_FILE)) as f:
    return json.load(f)


# What "the recipe or architecture" of a student is, for the promotion rule
# (components/promotion): the recipe, its loss weights and the parameter count
# of every layer. The training run's own details (steps, warm start, strategy)
# are not part of it: a nightly refresh of one recipe keeps its fingerprint.
RECIPE_KEYS = ('recipe', 'loss_weights', 'parameters')


def recipe_fingerprint(summary: Dict) -> str:
  """16 hex digits identifying a student's recipe and architecture ('' when the
  summary lacks them)."""
  if not all(k in summary for k in RECIPE_KEYS):
    return ''
  text = json.dumps({k: summary[k] for k in RECIPE_KEYS}, sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def student_recipe_fingerprint(quantized_model_uri: str) -> str:
  """The fingerprint of the float student a Quantizer output keeps beside its
  TFLite model ('' without one)."""
  path = os.path.join(quantized_model_uri, FLOAT_STUDENT_DIR)
  if not tf.io.gfile.exists(os.path.join(path, 'assets.extra', SUMMARY_FILE)):
    return ''
  return recipe_fingerprint(read_summary(path))
