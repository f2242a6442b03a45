"""Smoke: Transform's graph plus a trained student converts to full-INT8 TFLite
with builtin ops only, through the Quantizer's own executor (what ships)."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.utils import path_utils

from components.quantizer import convert
from models import data
from models import export
from models import losses
from models import towers
from models import training
from tests import helpers

pytestmark = pytest.mark.e2e


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

  # Exported as the Trainer exports the student, quantized by the Quantizer's
  # executor (its conversion, calibration and contract check). A 30-step
  # student: its NLL cost is not what this checks, so the guard is open.
  student_uri = str(tmp_path / 'student')
  export.save_student(network, tft_layer, path_utils.serving_model_path(student_uri),
                      {}, e2e.cfg.dataset)
  quantized, report = helpers.run_quantizer(e2e.cfg, student_uri, examples,
                                            str(tmp_path / 'int8'),
                                            max_nll_increase=1.0)
  assert report['mode'] == 'int8'
  with open(os.path.join(path_utils.serving_model_path(quantized.uri), 'tflite'),
            'rb') as f:
    content = f.read()
  ops = convert.op_table(content)
  interpreter = convert.interpreter(content)

  assert not [op.name for op in ops if op.name.startswith('Flex') or op.name == 'CUSTOM']
  fc = [op.input_dtypes for op in ops if op.name == 'FULLY_CONNECTED']
  gather = [op.input_dtypes for op in ops if op.name == 'GATHER']
  assert fc and all(i[0] == np.int8 and i[1] == np.int8 for i in fc)
  # The lean serving graph: one GATHER from one packed table for every embedding.
  assert len(gather) == 1 and all(i[0] == np.int8 for i in gather)
  # Inputs are the serving features by name (as TFMA feeds them); one output.
  inputs = {d['name'] for d in interpreter.get_input_details()}
  assert inputs == {f'serving_default_{c.name}:0' for c in features}
  assert len(interpreter.get_output_details()) == 1
