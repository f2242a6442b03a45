"""One command line over the same create_pipeline (DESIGN §8).

  python -m pipeline.cli run [--config CONFIG] [--set key=value ...] [--snapshot-time T]
"""

import argparse
import os
import sys
import time

from pipeline import config as config_lib


def _load(parser, args) -> config_lib.Config:
  try:
    return config_lib.load_config(args.config, args.overrides)
  except config_lib.ConfigError as e:
    parser.exit(2, f'error: {e}\n')


def _common(sub):
  sub.add_argument('--config', help='YAML config (defaults apply without one)')
  sub.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='KEY=VALUE', help='override a config key, e.g. window.days=14')


def cmd_run(parser, args) -> int:
  """Runs the DAG locally and prints per-component wall time."""
  cfg = _load(parser, args)
  from pipeline import local  # pylint: disable=g-import-not-at-top  (imports TFX)
  start = time.time()
  metadata = local.run(cfg, snapshot_time=args.snapshot_time)
  print(f'\nrun finished in {time.time() - start:.0f}s (ML Metadata: {metadata})')
  print(f'{"component":<26}{"state":<10}{"seconds":>8}')
  for row in local.node_executions(metadata, cfg.pipeline_name):
    print(f'{row["node"]:<26}{row["state"]:<10}{row["seconds"]:>8.1f}')
  return 0


def main(argv=None) -> int:
  # Keras 2 for TFX 1.16, whoever starts this process (the Makefile sets it too).
  os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
  parser = argparse.ArgumentParser(prog='python -m pipeline.cli',
                                   description='Run, compile and schedule the pipeline.')
  subs = parser.add_subparsers(dest='command', required=True)
  run = subs.add_parser('run', help='run the DAG locally (BeamDagRunner)',
                        description=cmd_run.__doc__)
  _common(run)
  run.add_argument('--snapshot-time', help='T (ISO 8601); default: the config or '
                   'resolved at run time by window.snapshot_policy')
  run.set_defaults(fn=cmd_run)
  args = parser.parse_args(argv)
  return args.fn(parser, args)


if __name__ == '__main__':
  sys.exit(main())
