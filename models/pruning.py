"""Magnitude pruning of the student's Dense layers with TF-MOT (config `pruning`).

See docs/architecture.md §5.

The seed notebook prunes its student before quantizing; here it is optional and
off by default. Training wraps the configured Dense layers in TF-MOT's
PruneLowMagnitude (their weights are the network's own, so a warm start loaded
before wrapping is kept) and steps the masks with TF-MOT's UpdatePruningStep
callback; `strip` removes the wrappers before export, so the exported student,
its warm-start weights and the lean serving graph see plain Dense layers with
their own names whose kernels hold exact zeros. The Quantizer is unchanged.
"""

import fnmatch
import math
from typing import Dict, List

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from config import PruningConfig

_sparsity = tfmot.sparsity.keras


def pruned_layers(network: tf.keras.Model, cfg: PruningConfig) -> List[str]:
  """Names of `network`'s Dense layers matched by cfg.layers, in layer order."""
  return [layer.name for layer in network.layers
          if isinstance(layer, tf.keras.layers.Dense)
          and any(fnmatch.fnmatchcase(layer.name, p) for p in cfg.layers)]


def schedule(cfg: PruningConfig, steps: int) -> _sparsity.PruningSchedule:
  """TF-MOT's schedule over `steps` pruning steps (one per callback batch).

  TF-MOT updates masks only at begin_step + k * frequency, up to end_step, so
  end_step is put on that grid at or before end_fraction of the steps (the last
  step is steps - 1); a range shorter than `frequency` gets one update at its
  end. Hence the target is always reached within training.
  """
  last = max(0, steps - 1)
  begin = min(int(cfg.begin_fraction * steps), last)
  if cfg.schedule == 'constant':
    return _sparsity.ConstantSparsity(cfg.target_sparsity, begin_step=begin,
                                      frequency=cfg.frequency)
  span = max(1, min(int(cfg.end_fraction * steps), last) - begin)
  frequency = min(cfg.frequency, span)
  end = begin + (span // frequency) * frequency
  return _sparsity.PolynomialDecay(cfg.initial_sparsity, cfg.target_sparsity,
                                   begin_step=begin, end_step=end,
                                   frequency=frequency)


def wrap(network: tf.keras.Model, cfg: PruningConfig, train_steps: int,
         steps_per_execution: int = 1) -> tf.keras.Model:
  """`network` with its configured Dense layers wrapped for pruning.

  The clone reuses `network`'s layers (and so its weights). Keras calls batch
  callbacks once per execution, so the schedule counts executions.

  Raises:
    ValueError: cfg.layers matches no Dense layer of `network`.
  """
  names = set(pruned_layers(network, cfg))
  if not names:
    raise ValueError(f'pruning.layers {cfg.layers} match no Dense layer of '
                     f'{network.name}')
  sched = schedule(cfg, math.ceil(train_steps / steps_per_execution))

  def clone(layer):
    if layer.name in names:
      return _sparsity.prune_low_magnitude(layer, pruning_schedule=sched)
    return layer
  return tf.keras.models.clone_model(network, clone_function=clone)


def callbacks() -> List[tf.keras.callbacks.Callback]:
  """What Model.fit needs to step the pruning masks."""
  return [_sparsity.UpdatePruningStep()]


def strip(network: tf.keras.Model) -> tf.keras.Model:
  """`network` without pruning wrappers: the Dense layers, masked kernels and
  names of the network before `wrap`."""
  return _sparsity.strip_pruning(network)


def sparsity(network: tf.keras.Model) -> Dict[str, float]:
  """The share of exact zeros in each Dense kernel (the training summary's)."""
  out = {}
  for layer in network.layers:
    if isinstance(layer, tf.keras.layers.Dense):
      kernel = layer.kernel.numpy()
      out[layer.name] = float((kernel == 0).mean())
  return out
