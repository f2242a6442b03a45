"""The pipeline CLI: help, and a bad config stops before any component runs."""

import os

import pytest

from pipeline import cli


def run(args, capsys):
  try:
    code = cli.main(args)
  except SystemExit as e:
    code = e.code
  out = capsys.readouterr()
  return code, out.out, out.err


def test_help_on_every_subcommand(capsys):
  code, out, _ = run(['--help'], capsys)
  assert code == 0 and 'run' in out
  for command in ('run', 'nightly', 'compile', 'submit', 'schedule'):
    assert command in out
  flags = {
      'run': ('--snapshot-time', '--bootstrap', '--auto-bootstrap'),
      'nightly': ('--snapshot-time',),
      'compile': ('--output',),
      'submit': ('--template', '--snapshot-time'),
      'schedule': ('--template',),
  }
  for command, own in flags.items():
    code, out, _ = run([command, '--help'], capsys)
    assert code == 0
    for flag in ('--config', '--set') + own:
      assert flag in out, (command, flag)


@pytest.mark.parametrize('override, message', [
    ('window.eval_days=99', 'window.eval_days: 99 must be smaller than window.days'),
    ('gate.max_nll=-1', 'gate.max_nll'),
    ('quantizer.mode=int4', "quantizer.mode: 'int4' is not one of"),
    ('distill.recipe=magic', 'distill.recipe'),
])
def test_a_bad_config_stops_before_any_component_runs(override, message, capsys,
                                                     tmp_path):
  out = tmp_path / 'outputs'
  code, _, err = run(['run', '--set', override, '--set', f'paths.output_root={out}'],
                     capsys)
  assert code == 2 and message in err
  assert not os.path.exists(out)  # no pipeline root, no ML Metadata
