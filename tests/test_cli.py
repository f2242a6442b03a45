"""The pipeline CLI: help, and a bad config stops before any component runs."""

import os

import pytest

from pipeline import cli
from pipeline import local
from pipeline import report


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
  for command in ('run', 'sweep', 'nightly', 'compile', 'submit', 'schedule'):
    assert command in out
  flags = {
      'run': ('--snapshot-time', '--bootstrap', '--auto-bootstrap', '--force'),
      'nightly': ('--snapshot-time', '--force'),
      'compile': ('--output', '--sweep'),
      'sweep': ('--snapshot-time',),
      'submit': ('--template', '--snapshot-time', '--force'),
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


@pytest.mark.parametrize('flags, force', [([], False), (['--force'], True)])
def test_nightly_passes_force_to_the_run(flags, force, capsys, monkeypatch):
  calls = []
  monkeypatch.setattr(local, 'run', lambda cfg, **kwargs: calls.append(kwargs))
  monkeypatch.setattr(report, 'summarize', lambda cfg, label: {})
  monkeypatch.setattr(report, 'text', lambda summary: '')
  code, _, _ = run(['nightly', '--snapshot-time', '2026-02-01T00:00:00Z'] + flags,
                   capsys)
  assert code == 0
  assert calls == [{'snapshot_time': '2026-02-01T00:00:00+00:00', 'bootstrap': False,
                    'force': force, 'sweep': False}]


def test_sweep_runs_the_sweep_dag_and_needs_a_tune_split(capsys, monkeypatch):
  calls = []
  monkeypatch.setattr(local, 'run', lambda cfg, **kwargs: calls.append(kwargs))
  monkeypatch.setattr(report, 'summarize', lambda cfg, label: {})
  monkeypatch.setattr(report, 'text', lambda summary: '')
  code, _, err = run(['sweep', '--snapshot-time', '2026-02-01T00:00:00Z'], capsys)
  assert code == 2 and 'sweep.tune_fraction' in err and not calls
  code, _, _ = run(['sweep', '--snapshot-time', '2026-02-01T00:00:00Z', '--set',
                    'sweep.tune_fraction=0.1'], capsys)
  assert code == 0
  # A sweep reruns its T even if served (force) and runs the Tuner (sweep).
  assert calls == [{'snapshot_time': '2026-02-01T00:00:00+00:00', 'bootstrap': False,
                    'force': True, 'sweep': True}]
