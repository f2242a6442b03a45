"""The generator's command line: help, one-line errors, idempotent --if-absent."""

import os

import pytest

from world import generator


def run(args, capsys):
  try:
    code = generator.main(args)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def test_help(capsys):
  code, out, _ = run(['--help'], capsys)
  assert code == 0
  for flag in ('--config', '--set', '--out', '--if-absent', '--force'):
    assert flag in out


@pytest.mark.parametrize('args, message', [
    (['--set', 'world.num_clicks=-5'],
     'error: world.num_clicks: -5 is out of range (must be >= 1)'),
    (['--set', 'world.colour=red'], 'error: unknown config key world.colour'),
    (['--set', 'world.seed=x'], "error: world.seed: expected an integer, got 'x'"),
    (['--config', '/nonexistent.yaml'], 'error: cannot read config /nonexistent.yaml'),
    (['--bogus'], 'unrecognized arguments: --bogus'),
])
def test_bad_arguments_give_one_line_errors(args, message, capsys, tmp_path):
  code, _, err = run(args + ['--out', str(tmp_path / 'w')], capsys)
  assert code == 2
  # One line names the problem (argparse's own errors follow a usage line).
  errors = [line for line in err.splitlines() if 'error:' in line]
  assert len(errors) == 1 and message in errors[0], err
  assert not os.path.exists(tmp_path / 'w')


def test_if_absent_is_a_no_op_and_a_different_world_is_refused(capsys, tmp_path):
  out = str(tmp_path / 'w')
  small = ['--out', out, '--set', 'world.num_clicks=500', '--set', 'world.days=2']
  assert run(small, capsys)[0] == 0
  mtime = os.path.getmtime(os.path.join(out, generator.MANIFEST))
  code, text, _ = run(small + ['--if-absent'], capsys)
  assert code == 0 and 'nothing to do' in text
  assert os.path.getmtime(os.path.join(out, generator.MANIFEST)) == mtime
  code, _, err = run(small + ['--set', 'world.seed=3', '--if-absent'], capsys)
  assert code == 2 and 'holds a different world' in err
  assert run(small + ['--set', 'world.seed=3', '--force'], capsys)[0] == 0
  assert generator.read_manifest(out)['world']['seed'] == 3


def test_refuses_to_overwrite_a_directory_that_is_not_a_world(capsys, tmp_path):
  out = tmp_path / 'precious'
  out.mkdir()
  (out / 'notes.txt').write_text('keep me')
  code, _, err = run(['--out', str(out), '--set', 'world.num_clicks=10'], capsys)
  assert code == 2 and 'is not a generated world' in err
  assert (out / 'notes.txt').read_text() == 'keep me'
