"""Smoke: Transform's graph plus a trained student converts to full-INT8 TFLite
with builtin ops only (the Quantizer builds on this)."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from models import data
from models import export
from models import features as features_lib
from models import losses
from models import towers
from models import training
from schemas import records
from world import synthetic

pytestmark = pytest.mark.e2e


def op_table(model_content):
  interpreter = tf.lite.Interpreter(model_content=model_content)
  interpreter.allocate_tensors()
  dtypes = {t['index']: t['dtype'] for t in interpreter.get_tensor_details()}
  return interpreter, [(op['op_name'], [dtypes[i] for i in op['inputs'] if i >= 0])
                       for op in interpreter._get_ops_details()]  # pylint: disable=protected-access


def test_student_with_transform_graph_converts_to_full_int8(e2e, tmp_path):
  transform = e2e.artifact('Transform', 'transform_graph')
  examples = e2e.artifact('ConversionLogExampleGen', 'examples')
  tft_layer = tft.TFTransformOutput(transform.uri).transform_features_layer()
  features = e2e.cfg.dataset.serving_features()
  train = [os.path.join(examples.uri, 'Split-train', '*')]

  network = towers.build_student_tower(e2e.cfg)
  model = training.LossModel(network, lambda t, o: {
      'loss': tf.nn.compute_average_loss(
          losses.thinned_poisson_loss(t, o[towers.LOG_RATES], observability=False))})
  model.compile(optimizer=tf.keras.optimizers.Adam(0.003))
  model.fit(data.model_dataset(train, tft_layer, features, 256, e2e.cfg.dataset),
            steps_per_epoch=30,
            verbose=0)

  raw = export.raw_feature_function(network, tft_layer, features)
  network.tft_layer = tft_layer
  saved = str(tmp_path / 'student')
  tf.saved_model.save(network, saved, signatures={'serving_default': raw})

  rows = records.read_examples(os.path.join(examples.uri, 'Split-train'))

  def representative():
    for i in range(200):
      yield {c.name: rows[c.name][i:i + 1].reshape(1, 1).astype(
          features_lib.dtype(c).as_numpy_dtype) for c in features}

  converter = tf.lite.TFLiteConverter.from_saved_model(saved)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  interpreter, ops = op_table(converter.convert())

  assert not [name for name, _ in ops if name.startswith('Flex') or name == 'CUSTOM']
  fc = [inputs for name, inputs in ops if name == 'FULLY_CONNECTED']
  gather = [inputs for name, inputs in ops if name == 'GATHER']
  assert fc and all(i[0] == np.int8 and i[1] == np.int8 for i in fc)
  # The lean serving graph: one GATHER from one packed table for every embedding.
  assert len(gather) == 1 and all(i[0] == np.int8 for i in gather)
  # Inputs are the serving features by name (as TFMA feeds them); one output.
  inputs = {d['name'] for d in interpreter.get_input_details()}
  assert inputs == {f'serving_default_{c.name}:0' for c in features}
  assert len(interpreter.get_output_details()) == 1
