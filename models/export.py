"""Exported signatures: serialized tf.Example in, rates out.

See docs/architecture.md §2 and §5.

The Transform graph is embedded (the Keras model tracks the TFT layer, so its
assets are saved with the model).
"""

import hashlib
import json
import os
import tempfile
from typing import Callable, Dict, Sequence

import tensorflow as tf

from models import features as features_lib
from models import towers
from schemas import columns

SERVING_SIGNATURE = 'serving_default'
PREDICT_SIGNATURE = 'predict'  # the BulkInferrer's: window rates and the hint
RAW_SIGNATURE = 'raw_features'  # the Quantizer's: raw serving features -> pConvs
PCONVS = 'pconvs'
RATE_OUTPUTS = tuple(f'rate_{w}' for w in columns.WINDOW_NAMES)
HINT_OUTPUT = 'hint'
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


def load_warm_start(network: tf.keras.Model, path: str) -> bool:
  """Loads weights saved by save_student into `network`, layer by layer name.

  Layers the saved student did not have (e.g. a KD student's auxiliary heads
  after a production-recipe bootstrap) or whose shapes changed keep their
  initialisation. Returns False when there is nothing at `path`.
  """
  if not tf.io.gfile.exists(path):
    return False
  with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, os.path.basename(path))
    tf.io.gfile.copy(path, local, overwrite=True)
    network.load_weights(local, by_name=True, skip_mismatch=True)
  return True


def window_rates(log_rates: tf.Tensor) -> Dict[str, tf.Tensor]:
  """pConvs [B] and one [B] rate per window from [B, W] log-rates."""
  rates = tf.exp(log_rates)
  out = {PCONVS: tf.reduce_sum(rates, axis=1)}
  for i, name in enumerate(RATE_OUTPUTS):
    out[name] = rates[:, i]
  return out


def example_signature(model: tf.keras.Model, tft_layer, feature_names: Sequence[str],
                      outputs: Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]):
  """A tf.function from serialized tf.Examples to `outputs(network outputs)`."""
  spec = features_lib.raw_feature_spec(feature_names)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve(serialized):
    raw = tf.io.parse_example(serialized, spec)
    transformed = tft_layer(raw)
    net = model({n: transformed[n] for n in feature_names}, training=False)
    return outputs(net)
  return serve


def raw_feature_function(model: tf.keras.Model, tft_layer,
                         feature_names: Sequence[str]):
  """A tf.function from raw serving features to pConvs, for TFLite conversion.

  Inputs are named exactly like the features and are dense [batch, 1] tensors
  (int64 ids, float32 numerics), so TFMA can feed a TFLite model from examples
  by name; the one output is pConvs [batch, 1].
  """
  specs = [tf.TensorSpec([None, 1], features_lib.dtype(n), name=n)
           for n in feature_names]

  @tf.function(input_signature=specs)
  def raw_features(*tensors):
    transformed = tft_layer(dict(zip(feature_names, tensors)))
    net = model({n: transformed[n] for n in feature_names}, training=False)
    return {PCONVS: tf.reduce_sum(tf.exp(net[towers.LOG_RATES]), axis=1,
                                  keepdims=True)}
  return raw_features


def save_teacher(network: tf.keras.Model, tft_layer, export_dir: str,
                 summary: Dict) -> None:
  """Saves the teacher with its serving and predict signatures and its summary."""
  network.tft_layer = tft_layer  # tracked: the transform assets are saved too
  names = features_lib.TEACHER_FEATURES
  serving = example_signature(network, tft_layer, names,
                              lambda o: window_rates(o[towers.LOG_RATES]))

  def predict_outputs(o):
    out = {k: v for k, v in window_rates(o[towers.LOG_RATES]).items()
           if k in RATE_OUTPUTS}
    out[HINT_OUTPUT] = o[towers.HINT]
    return out
  predict = example_signature(network, tft_layer, names, predict_outputs)
  tf.saved_model.save(network, export_dir, signatures={
      SERVING_SIGNATURE: serving, PREDICT_SIGNATURE: predict})
  write_summary(export_dir, summary)


def save_student(network: tf.keras.Model, tft_layer, export_dir: str,
                 summary: Dict) -> None:
  """Saves the student: serving (tf.Example in; pConvs and window rates out) and
  raw-feature (serving features in by name; pConvs out) signatures.

  Embedding tables are rescaled first (exact in float, see
  towers.rescale_embeddings) so that the INT8 conversion keeps their precision.
  """
  names = features_lib.SERVING_FEATURES
  # Training-scale weights first: the next night continues from these.
  _save_weights(network, os.path.join(export_dir, WARM_START_FILE))
  towers.rescale_embeddings(network, names)
  network.tft_layer = tft_layer
  serving = example_signature(network, tft_layer, names,
                              lambda o: window_rates(o[towers.LOG_RATES]))
  raw = raw_feature_function(network, tft_layer, names)
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
