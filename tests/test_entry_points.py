"""The process entry points work with TF_USE_LEGACY_KERAS unset.

TFX 1.16 needs Keras 2 (tf-keras), and TensorFlow picks its Keras from the
variable, so each entry point must set it itself before TensorFlow is imported:
cron, a container or a shell may start it without the Makefile's environment.
"""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLE = 'TF_USE_LEGACY_KERAS'
MARKER = 'ENTRY_POINT_PROBE '
DAY_PARTITION = re.compile(r'date=\d{4}-\d{2}-\d{2}')

# Runs `python -m <module> <args>` the way -m does (runpy, as __main__) and
# records the variable at the moment TensorFlow is first imported, wherever the
# entry point sets it (module top or main()). Reading tf.keras afterwards would
# not tell: TensorFlow reads the variable again on first use of tf.keras, but the
# paths `import tensorflow.keras...` resolves through are fixed at import.
PROBE = f"""
import json, os, runpy, sys
probe = {{'at_start': os.environ.get({VARIABLE!r}), 'tf_imported': False}}

def hook(event, args):
  if event == 'import' and args[0] == 'tensorflow' and not probe['tf_imported']:
    probe.update(tf_imported=True, at_tf_import=os.environ.get({VARIABLE!r}))

sys.addaudithook(hook)
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
  runpy.run_module(module, run_name='__main__', alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code
if 'tensorflow' in sys.modules:
  probe['keras'] = sys.modules['tensorflow'].keras.__name__
print({MARKER!r} + json.dumps(probe), flush=True)
sys.exit(code)
"""


def child_env():
  """This process's environment without the variable."""
  return {k: v for k, v in os.environ.items() if k != VARIABLE}


def run(args, timeout):
  return subprocess.run([sys.executable] + args, cwd=ROOT, env=child_env(),
                        capture_output=True, text=True, timeout=timeout)


def run_probed(module, args, timeout):
  """Runs `python -m module args` under PROBE; returns (process, probe dict)."""
  out = run(['-c', PROBE, module] + args, timeout)
  lines = [l for l in out.stdout.splitlines() if l.startswith(MARKER)]
  assert lines, out.stdout + out.stderr
  probe = json.loads(lines[-1][len(MARKER):])
  assert probe['at_start'] is None  # the child really started without it
  return out, probe


@pytest.mark.parametrize('module', ['pipeline.cli', 'world.generator'])
def test_help_without_the_variable(module):
  out = run(['-m', module, '--help'], timeout=60)
  assert out.returncode == 0, out.stderr
  assert f'usage: python -m {module}' in out.stdout, out.stdout


def test_cli_sets_the_variable_before_any_tensorflow_import():
  # --help imports no TensorFlow today; this catches a module-level import of
  # it (through config or schemas, say) ahead of the CLI setting the variable.
  out, probe = run_probed('pipeline.cli', ['--help'], timeout=60)
  assert out.returncode == 0, out.stderr
  assert not probe['tf_imported'] or probe['at_tf_import'] == '1', probe


def test_generator_writes_a_tiny_world_with_keras_2(tmp_path):
  world = tmp_path / 'world'
  out, probe = run_probed('world.generator', [
      '--out', str(world), '--set', 'world.num_clicks=300',
      '--set', 'world.days=2'], timeout=180)
  assert out.returncode == 0, out.stderr
  # The generator writes its logs with TensorFlow, so it must have imported it,
  # and only once the variable was set.
  assert probe['tf_imported'], probe
  assert probe['at_tf_import'] == '1', probe
  assert probe['keras'].startswith('tf_keras.'), probe

  for log, days in (('clicks', 2), ('conversions', None)):
    partitions = sorted(os.listdir(world / log))
    assert partitions and all(DAY_PARTITION.fullmatch(p) for p in partitions), (
        log, partitions)
    if days is not None:
      assert len(partitions) == days
    for p in partitions:
      assert os.listdir(world / log / p), (log, p)
  with open(world / 'manifest.json') as f:
    assert json.load(f)['counts']['clicks'] == 300
