"""What `pipeline.cli run` prints: two lines per component and the summary by
default, the libraries' output in the log file (or, with --verbose, on the
console), a failure's cause on the console; training progress on a terminal only.

The runs here fail fast at the first component (a data root without logs), so
they cost a process start each; the nights of conftest.e2e check the lines of a
whole DAG (tests/test_run_report_e2e.py).
"""

import io
import os
import subprocess
import sys
import types

import pytest

from pipeline import console
from tests import helpers

# Printed by TFX's launcher (absl INFO) for every node: library output.
LIBRARY_LINE = 'Running launcher for'
CAUSE = 'no clicks log at'


def cli_run(tmp_path, *flags):
  """Starts the CLI on a data root without logs; returns the process."""
  empty = tmp_path / 'no_logs'
  empty.mkdir(parents=True, exist_ok=True)
  out = tmp_path / 'outputs'
  command = [sys.executable, '-m', 'pipeline.cli', 'run', *flags,
             '--snapshot-time', '2026-01-10T00:00:00Z',
             '--set', f'paths.data_root={empty}', '--set', f'paths.output_root={out}',
             '--set', f'paths.serving_dir={tmp_path / "serving"}']
  return subprocess.Popen(command, cwd=helpers.ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, 'TF_USE_LEGACY_KERAS': '1'})


def finished(proc):
  stdout, stderr = proc.communicate(timeout=300)
  return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.e2e
def test_default_output_is_quiet_and_names_the_failure_and_verbose_is_not(tmp_path):
  # Both at once: each is mostly importing TensorFlow.
  runs = [cli_run(tmp_path / 'quiet'), cli_run(tmp_path / 'verbose', '--verbose')]
  quiet, verbose = [finished(p) for p in runs]
  assert quiet.returncode == 1
  assert quiet.stderr == '', quiet.stderr  # nothing from the libraries
  lines = quiet.stdout.splitlines()
  # Before the summary (whose table names it again).
  node = [l for l in lines[:5] if l.startswith('ConversionLogExampleGen ')]
  assert node[0] == 'ConversionLogExampleGen started'
  assert node[1].startswith('ConversionLogExampleGen FAILED') and CAUSE in node[1]
  assert len(node) == 2
  assert lines[-1].startswith('error: ConversionLogExampleGen: WindowError: ' + CAUSE)
  assert LIBRARY_LINE not in quiet.stdout
  (log,) = [l.split()[1] for l in lines if l.startswith('log: ')][-1:]
  with open(log) as f:
    assert LIBRARY_LINE in f.read()  # the library output went to the log
  (report,) = [l.split()[1] for l in lines if l.startswith('report: ')]
  assert os.path.exists(report)
  # The header, the log line, two per component, then the summary.
  assert lines[0].startswith('=== run: ') and lines[1].startswith('log: ')
  assert lines[2:4] == node and lines[4] == ''
  assert lines[5].startswith('run FAILED in '), lines

  assert verbose.returncode == 1
  assert LIBRARY_LINE in verbose.stdout + verbose.stderr
  assert not [l for l in verbose.stdout.splitlines() if l.startswith('log: ')]
  assert CAUSE in verbose.stdout


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def test_training_progress_shows_on_a_terminal_only():
  tty, log = console.Console(_Terminal()), console.Console(io.StringIO())
  for out in (tty, log):
    out.start('student')
    out.progress(150, 300, 0.25, 3.0)
    out.end('student', 'COMPLETE', 6.0, '300 steps, final loss 0.2000')
  shown = tty.out.getvalue()
  assert 'step 150/300' in shown and '50 steps/s' in shown and '3s left' in shown
  assert log.out.getvalue() == ('student started\n'
                                'student COMPLETE 6.0s: 300 steps, final loss 0.2000\n')
  # The progress line is cleared before the end line.
  assert shown.endswith('\r\x1b[Kstudent COMPLETE 6.0s: 300 steps, final loss 0.2000\n')


def test_the_launcher_internals_the_console_patches_are_tfx_1_16s():
  # Fails loudly when TFX changes what pipeline/console.py wraps or reads: the
  # console would otherwise print nothing, or the wrong node's lines.
  import inspect  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import data_types  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import launcher  # pylint: disable=g-import-not-at-top
  for name, params in console.LAUNCHER_METHODS.items():
    method = getattr(launcher.Launcher, name, None)
    assert method is not None, f'tfx Launcher.{name} is gone'
    assert tuple(inspect.signature(method).parameters) == params, (
        name, inspect.signature(method))
  init = inspect.getsource(launcher.Launcher.__init__)
  for attribute in console.LAUNCHER_ATTRIBUTES:
    assert f'self.{attribute} =' in init, f'tfx Launcher.{attribute} is gone'
  # launch returns an ExecutionInfo whose execution_id is None when the node
  # is skipped (its inputs resolve to Skip: a false Cond).
  launch = inspect.getsource(launcher.Launcher.launch)
  assert 'return execution_info' in launch and '_run_executor(execution_info)' in launch
  assert data_types.ExecutionInfo().execution_id is None
  assert 'execution_info=self._build_execution_info(),' in inspect.getsource(
      launcher.Launcher._prepare_execution)  # pylint: disable=protected-access


class _FakeLauncher:
  """What the wrapped methods read of a Launcher: its node, system node handler
  and ML Metadata connection."""

  def __init__(self, node, connection):
    self._pipeline_node = types.SimpleNamespace(node_info=types.SimpleNamespace(id=node))
    self._system_node_handler = None
    self._mlmd_connection = connection


def test_each_node_prints_its_lines_complete_skipped_and_failed(tmp_path):
  from tfx.orchestration import metadata  # pylint: disable=g-import-not-at-top
  from tfx.orchestration.portable import data_types  # pylint: disable=g-import-not-at-top
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from tests import test_mlmd_readers  # pylint: disable=g-import-not-at-top
  connection = metadata.Metadata(metadata.sqlite_metadata_connection_config(
      str(tmp_path / 'metadata.sqlite')))
  quantized = standard_artifacts.Model()
  quantized.uri = str(tmp_path / 'q')
  quantized.set_string_custom_property('quantization_mode', 'int8')
  quantized.set_int_custom_property('quantized_bytes', 48456)
  quantized.set_float_custom_property('size_ratio', 0.2819)
  quantized.set_float_custom_property('nll_relative_change', -0.00005)
  with connection as m:
    execution_id = test_mlmd_readers._publish(  # pylint: disable=protected-access
        m, 'Quantizer', {'quantized_model': [quantized]})

  out = console.Console(io.StringIO())

  def ran(self):  # a node whose executor ran and published
    run_executor(self, None)
    return data_types.ExecutionInfo(execution_id=execution_id)

  def skipped(self):  # a node whose Cond is false: no executor, no execution
    del self
    return data_types.ExecutionInfo()

  def failed(self):
    run_executor(self, None)
    raise RuntimeError('quantization costs too much\nsecond line')

  for node, launch in (('Quantizer', ran), ('Evaluator', skipped), ('Pusher', failed)):
    # pylint: disable=protected-access
    wrapped, run_executor = console._wrap_launcher(out, launch, lambda self, info: None)
    try:
      wrapped(_FakeLauncher(node, connection))
    except RuntimeError:
      assert node == 'Pusher'
  lines = [l.split(' ', 2) for l in out.out.getvalue().splitlines()]
  assert [l[:2] for l in lines] == [
      ['Quantizer', 'started'], ['Quantizer', 'COMPLETE'],
      ['Evaluator', 'SKIPPED'], ['Pusher', 'started'], ['Pusher', 'FAILED']]
  # The key figure, read back from ML Metadata.
  assert lines[1][2].endswith('s: int8 48,456 bytes (0.282x float), NLL -0.005%'), lines[1]
  # The skipped node: one line, that says why.
  assert lines[2][2].endswith('s: its condition is false on this night'), lines[2]
  assert lines[4][2].endswith('s: RuntimeError: quantization costs too much'), lines[4]
  assert out.failure == 'Pusher: RuntimeError: quantization costs too much'


def test_a_trainers_line_says_how_many_examples_it_saw():
  """The figure comes from the fit's progress callback (steps x batch size)."""
  from models import progress  # pylint: disable=g-import-not-at-top
  callback = progress.KerasProgress(total_steps=3, batch_size=512)
  callback.on_train_begin()
  for step in range(3):
    callback.on_train_batch_end(step, {'loss': 0.25})
  try:
    assert console.key_figure('teacher', {}) == (
        '3 steps (1,536 examples seen), final loss 0.2500')
  finally:
    progress.reset()
  assert console.key_figure('student', {}) == ''
