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
