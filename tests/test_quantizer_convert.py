"""The serving-contract check rejects models TFMA would feed wrongly."""

import pytest
import tensorflow as tf

from components.quantizer import convert
from schemas import columns
from world import synthetic


def tiny_model(tmp_path, names):
  specs = [tf.TensorSpec([None, 1], tf.float32, name=n) for n in names]

  @tf.function(input_signature=specs)
  def fn(*xs):
    return {'pconvs': tf.exp(tf.add_n(xs))}
  module = tf.Module()
  module.fn = fn
  path = str(tmp_path / 'sm')
  tf.saved_model.save(module, path, signatures={'serving_default': fn})
  return convert.convert(path, 'float32')


def test_missing_and_unexpected_inputs_are_named(tmp_path):
  model = tiny_model(tmp_path, ['price', 'colour'])
  with pytest.raises(convert.QuantizationError) as e:
    convert.check(model, synthetic.SERVING_FEATURES, 'float32')
  assert "unexpected ['colour']" in str(e.value) and 'advertiser_id' in str(e.value)


def test_int8_mode_requires_an_int8_core(tmp_path):
  model = tiny_model(tmp_path, ['price'])
  with pytest.raises(convert.QuantizationError, match='int8 mode'):
    convert.check(model, ['price'], 'int8')
  assert convert.check(model, ['price'], 'float32')['ops']
