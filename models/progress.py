"""Training progress for whoever watches the run (pipeline/console.py).

The Trainers' run_fns execute inside the orchestrator's process (BeamDagRunner),
so a Keras callback can hand every step to a sink the console installed; with no
sink (tests, Vertex) it only remembers the last step and loss.
"""

import time
from typing import Callable, Dict, Optional

import tensorflow as tf

# (step, total steps, loss, seconds since the first step) -> None.
Sink = Callable[[int, int, float, float], None]
_sink: Optional[Sink] = None
_last: Dict[str, float] = {}


def set_sink(sink: Optional[Sink]) -> None:
  """Installs (or removes, with None) the function every step is reported to."""
  global _sink
  _sink = sink


def last() -> Dict[str, float]:
  """The last fit's final step count, training loss and examples seen (steps x
  batch size; 0 when not given) ({} before any fit)."""
  return dict(_last)


def reset() -> None:
  _last.clear()


class KerasProgress(tf.keras.callbacks.Callback):
  """Reports each training batch's step and loss."""

  def __init__(self, total_steps: int, batch_size: int = 0):
    super().__init__()
    self._total = int(total_steps)
    self._batch = int(batch_size)
    self._start = None

  def on_train_begin(self, logs=None):
    self._start = time.monotonic()
    _last.clear()

  def on_train_batch_end(self, batch, logs=None):
    loss = float((logs or {}).get('loss', float('nan')))
    _last.update(steps=batch + 1, loss=loss, examples=(batch + 1) * self._batch)
    if _sink is not None:
      _sink(batch + 1, self._total, loss, time.monotonic() - self._start)
