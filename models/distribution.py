"""Distribution strategy from config (docs/architecture.md §5).

  tpu:      TPUStrategy over a TPUClusterResolver (on Vertex TPU VMs the TPU is
            'local' to the training container);
  mirrored: MirroredStrategy over the visible GPUs (or CPUs in tests);
  default:  the default (no-op) strategy;
  auto:     a TPU if one is attached, else mirrored when GPUs are visible, else
            the default strategy.
"""

import glob

from absl import logging
import tensorflow as tf


def _tpu_strategy(address: str) -> tf.distribute.Strategy:
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return tf.distribute.TPUStrategy(resolver)


def _tpu_attached(address: str) -> bool:
  """A configured TPU address, or a TPU VM's devices on this host."""
  if address != 'local':
    return True
  # TPU VMs expose /dev/accel* (v2-v4) or /dev/vfio/N (v5+); the resolver itself
  # constructs fine without a TPU, so it cannot tell.
  return bool(tf.config.list_physical_devices('TPU') or glob.glob('/dev/accel*') or
              glob.glob('/dev/vfio/[0-9]*'))


def get_strategy(kind: str, tpu: str = 'local') -> tf.distribute.Strategy:
  """The strategy for `kind` (training.strategy)."""
  if kind == 'tpu' or (kind == 'auto' and _tpu_attached(tpu)):
    strategy = _tpu_strategy(tpu)
  elif kind == 'mirrored' or (kind == 'auto' and tf.config.list_physical_devices('GPU')):
    strategy = tf.distribute.MirroredStrategy()
  elif kind in ('default', 'auto'):
    strategy = tf.distribute.get_strategy()
  else:
    raise ValueError(f'unknown distribution strategy {kind!r}')
  logging.info('distribution: %s with %d replicas', type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy
