"""What a local run prints (docs/architecture.md §8; docs/usage.md, "What a run prints").

By default: two lines per component (its start; its end with state, seconds and
a key figure), a training progress line on a terminal, then the summary.
Everything the libraries print (TensorFlow's C++ log, absl, Beam, Python
warnings) goes to a log file under the run's output root; `--verbose` leaves it
on the console.

BeamDagRunner runs every node in this process (its DoFn calls
tfx.orchestration.portable.launcher.Launcher.launch), so wrapping `launch` sees
each node start and end; the output artifacts its executor wrote are read back
from ML Metadata (execution_lib.get_output_artifacts). TFX 1.16 has no hook for
this (BeamDagRunner takes no callback, and its DoFn class is a private
attribute), so the console patches two Launcher methods, in `patch_launcher`
only; LAUNCHER_METHODS and LAUNCHER_ATTRIBUTES name every launcher internal it
relies on, and tests/test_console.py fails when TFX changes one of them.
"""

import contextlib
import datetime
import io
import logging as py_logging
import os
import sys
import time
import warnings
from typing import Dict, List, Optional, TextIO
from unittest import mock

from absl import logging

# Node id -> how its key figure is read from its output artifacts.
_TRAINERS = ('teacher', 'student')
# The TFX 1.16 launcher internals the console relies on: the methods it wraps,
# by name with their parameters, and the attributes of a Launcher it reads.
LAUNCHER_METHODS = {'launch': ('self',), '_run_executor': ('self', 'execution_info')}
LAUNCHER_ATTRIBUTES = ('_pipeline_node', '_system_node_handler', '_mlmd_connection')


def _prop(artifact, name: str, default=None):
  """A custom property of a TFX Artifact (any type), or `default`."""
  value = artifact.get_custom_property(name)
  return default if value is None else value


def _first(output_dict: Dict, key: str):
  artifacts = (output_dict or {}).get(key) or []
  return artifacts[0] if artifacts else None


def key_figure(node: str, output_dict: Dict) -> str:
  """The one figure that says what `node` did (from its output artifacts)."""
  if node in _TRAINERS:
    from models import progress  # pylint: disable=g-import-not-at-top
    last = progress.last()
    seen = last.get('examples') if last else 0
    return (f'{last["steps"]} steps' + (f' ({seen:,} examples seen)' if seen else '')
            + f', final loss {last["loss"]:.4f}' if last else '')
  figures = {
      'ConversionLogExampleGen': lambda o: (
          lambda a: a and f'{_prop(a, "train_examples", 0):,} train / '
          f'{_prop(a, "eval_examples", 0):,} eval rows written, T '
          f'{_prop(a, "snapshot_time", "?")}')(_first(o, 'examples')),
      'ServedBaseline': lambda o: (
          lambda a: a and (_prop(a, 'reason') or
                           f'baseline {_prop(a, "baseline_version") or "none"}'))(
                               _first(o, 'result')),
      # The verdict's first clause: eval NLL and the gap closed (then the bar
      # and calibration, which the summary and ML Metadata keep).
      'TeacherGate': lambda o: (
          lambda a: a and str(_prop(a, 'verdict', '')).split(';')[0])(
              _first(o, 'result')),
      'Quantizer': lambda o: (
          lambda a: a and f'{_prop(a, "quantization_mode")} '
          f'{_prop(a, "quantized_bytes", 0):,} bytes '
          f'({_prop(a, "size_ratio", float("nan")):.3f}x float), NLL '
          f'{_prop(a, "nll_relative_change", float("nan")):+.3%}')(
              _first(o, 'quantized_model')),
      'Evaluator': lambda o: (
          lambda a: a and ('blessed' if _prop(a, 'blessed') else 'not blessed')
          + ' on PoissonLogLoss (recorded)')(_first(o, 'blessing')),
      'Promotion': lambda o: (
          lambda a: a and ('promoted' if _prop(a, 'blessed') else 'not promoted')
          + f' (rule {_prop(a, "rule_applied", "?")})')(_first(o, 'blessing')),
      'Pusher': lambda o: (
          lambda a: a and (f'pushed {_prop(a, "pushed_version")}'
                           if _prop(a, 'pushed') else
                           f'not pushed: {_prop(a, "reason", "")}'))(
                               _first(o, 'pushed_model')),
  }
  try:
    return figures[node](output_dict) or '' if node in figures else ''
  except Exception:  # pylint: disable=broad-except
    return ''  # a figure is a courtesy; never fail a run over it


def one_line(error: BaseException, width: int = 300) -> str:
  """An exception as one line: its type and first non-empty message line."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  text = f'{type(error).__name__}: {lines[0] if lines else ""}'
  return text if len(text) <= width else text[:width - 3] + '...'


class Console:
  """Where the person watching reads: component lines, progress, summary."""

  def __init__(self, out: TextIO, log_path: Optional[str] = None):
    self.out = out
    self.log_path = log_path
    self.failure: Optional[str] = None  # the first failing node's cause
    self.nodes: List[str] = []
    self._tty = hasattr(out, 'isatty') and out.isatty()
    self._progress_shown = False
    self._last_progress = 0.0

  def line(self, text: str = '') -> None:
    self._clear_progress()
    self.out.write(text + '\n')
    self.out.flush()

  def start(self, node: str) -> None:
    self.nodes.append(node)
    self.line(f'{node} started')

  def end(self, node: str, state: str, seconds: float, figure: str = '') -> None:
    if node not in self.nodes:
      self.nodes.append(node)
    self.line(f'{node} {state} {seconds:.1f}s' + (f': {figure}' if figure else ''))

  def progress(self, step: int, total: int, loss: float, seconds: float) -> None:
    """A training step: one rewritten line on a terminal, nothing elsewhere."""
    now = time.monotonic()
    if not self._tty or (now - self._last_progress < 0.25 and step < total):
      return
    self._last_progress = now
    rate = step / seconds if seconds > 0 else 0.0
    left = (total - step) / rate if rate > 0 else float('nan')
    self.out.write(f'\r     step {step}/{total}  {rate:.0f} steps/s  '
                   f'{left:.0f}s left  loss {loss:.4f}\033[K')
    self.out.flush()
    self._progress_shown = True

  def _clear_progress(self) -> None:
    if self._progress_shown:
      self.out.write('\r\033[K')
      self._progress_shown = False


def _outputs(mlmd_connection, execution_id: int) -> Dict:
  """An execution's output artifacts as published, custom properties included
  ({} if ML Metadata cannot say: a figure is a courtesy)."""
  from tfx.orchestration.portable.mlmd import execution_lib  # pylint: disable=g-import-not-at-top
  try:
    with mlmd_connection as m:
      return execution_lib.get_output_artifacts(m, execution_id)
  except Exception:  # pylint: disable=broad-except
    return {}


def _wrap_launcher(console: Console, launch, run_executor):
  """Launcher.launch and ._run_executor reporting to `console`: the start line
  when the executor starts (a node the Cond skips gets only its end line,
  SKIPPED), the end line when launch returns or raises."""
  from models import progress  # pylint: disable=g-import-not-at-top

  def wrapped_run_executor(self, execution_info):
    console.start(self._pipeline_node.node_info.id)  # pylint: disable=protected-access
    return run_executor(self, execution_info)

  def wrapped_launch(self):
    node = self._pipeline_node.node_info.id  # pylint: disable=protected-access
    if self._system_node_handler:  # pylint: disable=protected-access
      return launch(self)
    progress.reset()
    start = time.monotonic()
    try:
      info = launch(self)
    except BaseException as e:  # pylint: disable=broad-except
      cause = one_line(e)
      console.failure = console.failure or f'{node}: {cause}'
      console.end(node, 'FAILED', time.monotonic() - start, cause)
      raise
    seconds = time.monotonic() - start
    if info is None or info.execution_id is None:
      console.end(node, 'SKIPPED', seconds, 'its condition is false on this night')
    else:
      console.end(node, 'COMPLETE', seconds, key_figure(
          node, _outputs(self._mlmd_connection, info.execution_id)))  # pylint: disable=protected-access
    return info

  return wrapped_launch, wrapped_run_executor


@contextlib.contextmanager
def patch_launcher(console: Console):
  """TFX's Launcher reporting to `console` inside the context (the only place
  the console touches TFX internals: LAUNCHER_METHODS, LAUNCHER_ATTRIBUTES)."""
  from tfx.orchestration.portable import launcher  # pylint: disable=g-import-not-at-top
  launch, run_executor = _wrap_launcher(
      console, launcher.Launcher.launch,
      launcher.Launcher._run_executor)  # pylint: disable=protected-access
  with mock.patch.object(launcher.Launcher, 'launch', launch), \
      mock.patch.object(launcher.Launcher, '_run_executor', run_executor):
    yield


def log_path_for(root: str) -> str:
  """A new log file's path under the run's output root."""
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  return os.path.join(root, 'logs', f'run-{stamp}-{os.getpid()}.log')


@contextlib.contextmanager
def _quiet(log_path: str):
  """Sends file descriptors 1 and 2 (Python, absl, Beam and TensorFlow's C++
  log alike) to `log_path`; yields a stream on the original stdout."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  saved = [os.dup(1), os.dup(2)]
  out = io.TextIOWrapper(os.fdopen(os.dup(1), 'wb', buffering=0),
                         write_through=True)
  with open(log_path, 'ab', buffering=0) as log:
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
      yield out
    finally:
      for stream in (sys.stdout, sys.stderr):
        stream.flush()
      os.dup2(saved[0], 1)
      os.dup2(saved[1], 2)
      for fd in saved:
        os.close(fd)
      out.flush()
      out.close()


@contextlib.contextmanager
def quietly(root: str, verbose: bool = False):
  """What a command does before its session (resolving T imports TensorFlow):
  the libraries' import-time output into a log file under `root`, unless
  `verbose`."""
  if verbose:
    yield
    return
  with _quiet(log_path_for(root)):
    yield


@contextlib.contextmanager
def session(root: str, verbose: bool = False, out: Optional[TextIO] = None,
            redirect: bool = True):
  """Reports each node of the runs inside it to a Console, which it yields.

  Args:
    root: the run's output root (the log file goes to <root>/logs/).
    verbose: leave the libraries' output on the console (and at INFO).
    out: where the console lines go (default: the process's stdout).
    redirect: when not verbose, send fds 1 and 2 to the log file (off for an
      in-process caller that captures `out` itself, e.g. the tests' nights).
  """
  verbosity = logging.get_verbosity()
  with contextlib.ExitStack() as stack:
    log_path = None
    if verbose:
      logging.set_verbosity(logging.INFO)
    elif redirect:
      log_path = log_path_for(root)
      quiet_out = stack.enter_context(_quiet(log_path))
      out = out or quiet_out
      # Into the log at INFO (what the runner did), warnings included.
      logging.set_verbosity(logging.INFO)
      py_logging.captureWarnings(True)
      stack.callback(py_logging.captureWarnings, False)
      stack.enter_context(warnings.catch_warnings())
      warnings.simplefilter('default')
    # Imported once the log catches what importing TensorFlow prints.
    from models import progress  # pylint: disable=g-import-not-at-top
    console = Console(out or sys.stdout, log_path)
    stack.enter_context(patch_launcher(console))
    progress.set_sink(console.progress)
    stack.callback(progress.set_sink, None)
    stack.callback(logging.set_verbosity, verbosity)
    yield console
