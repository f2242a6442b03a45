"""One command line over the same create_pipeline (docs/architecture.md §8).

  python -m pipeline.cli run       [--config C] [--set k=v ...] [--snapshot-time T]
                                   [--bootstrap | --auto-bootstrap] [--verbose]
  python -m pipeline.cli nightly   [--config C] [--set k=v ...] [--snapshot-time T]
                                   [--verbose]
  python -m pipeline.cli report    [--config C] [--set k=v ...] [--run-id R | --list]
  python -m pipeline.cli compile   [--config C] [--set k=v ...] [--output JSON]
  python -m pipeline.cli submit    [--config C] [--set k=v ...] [--template JSON]
                                   [--snapshot-time T]
  python -m pipeline.cli schedule  [--config C] [--set k=v ...] [--template JSON]
  python -m pipeline.cli schema    [--config C] [--set k=v ...] [--check] [--out DIR]

run and nightly use BeamDagRunner with SQLite ML Metadata (local), print two
lines per component and write the run's report (pipeline/run_report.py); report
rebuilds it for a past local run. compile, submit and schedule target Vertex AI
Pipelines (the `vertex` config section). schema writes the dataset's TFDV schema
and serving contract, generated from its spec, beside the spec (or checks them).
"""

import os

# An entry point: Keras 2 (tf-keras) for TFX 1.16 must be chosen before anything
# imports TensorFlow, whoever starts this process (the Makefile sets it too).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import argparse
import datetime
import json
import sys
import time
from typing import Optional

import config as config_lib
from config import dataset as dataset_lib
from observation import snapshot

# TensorFlow and TFX (pipeline.local, .report, .vertex and the ExampleGen's
# window listing) are imported inside the commands that use them, so that
# `--help` and config errors answer in a second instead of ten.


def _load(parser, args) -> config_lib.Config:
  try:
    return config_lib.load_config(args.config, args.overrides)
  except config_lib.ConfigError as e:
    parser.exit(2, f'error: {e}\n')


def _common(sub):
  sub.add_argument('--config', help='YAML config (defaults apply without one)')
  sub.add_argument('--set', dest='overrides', action='append', default=[],
                   metavar='KEY=VALUE', help='override a config key, e.g. window.days=14')


def _verbose(sub):
  sub.add_argument('--verbose', action='store_true',
                   help="show the libraries' output (TensorFlow, absl, Beam, "
                   'warnings) on the console instead of the run\'s log file')


def cmd_report(parser, args) -> int:
  """Rebuilds the HTML report of a past local run from its ML Metadata (the
  SQLite file under <paths.output_root>/<pipeline_name>/). Local runs only: a
  Vertex run's metadata lives in Vertex ML Metadata, which this never calls; its
  artifacts are in the pipeline root on GCS."""
  cfg = _load(parser, args)
  from pipeline import local  # TFX
  from pipeline import run_report
  paths = local.LocalPaths.from_config(cfg)
  if args.list:
    for run in local.pipeline_runs(paths.metadata, cfg.pipeline_name):
      nodes = run['executions']
      print(f'{run["run_id"]}  {len(nodes)} nodes, last {nodes[-1]["node"]} '
            f'{nodes[-1]["state"]}')
    return 0
  try:
    path = run_report.build(cfg, args.run_id)
  except ValueError as e:
    parser.exit(2, f'error: {e}\n')
  print(f'report: {path}')
  return 0


def _force(sub):
  sub.add_argument('--force', action='store_true',
                   help='rerun a night whose T is already served (by default '
                   'everything after the ExampleGen is skipped)')


def resolve_t(cfg: config_lib.Config, snapshot_time: Optional[str]):
  """T as the ExampleGen would resolve it (the edge needs it to bootstrap)."""
  from components.example_gen import window  # TensorFlow
  return window.resolve_window(
      cfg.paths.data_root, cfg.dataset, snapshot_time or cfg.window.snapshot_time or '',
      cfg.window.snapshot_policy, cfg.window.days, cfg.window.eval_days,
      lambda: datetime.datetime.now(snapshot.UTC)).snapshot


def run_once(cfg: config_lib.Config, snapshot_time: Optional[str], bootstrap: bool,
             label: str, force: bool = False, verbose: bool = False,
             sweep: bool = False) -> int:
  """One local run: a line per component start and end, the summary, the
  report's and the log's paths; the libraries' output in the log unless
  `verbose`. `sweep` runs the sweep DAG (the Tuner before the student)."""
  from pipeline import console  # pylint: disable=g-import-not-at-top
  if bootstrap:
    cfg = config_lib.from_dict({**json.loads(cfg.to_json()),
                                'distill': {**json.loads(cfg.to_json())['distill'],
                                            'recipe': 'production'}})
  root = cfg.local_root()
  start = time.time()
  failure = None
  with console.session(root, verbose=verbose) as out:
    out.line(f'=== {label}: recipe {cfg.distill.recipe}, T '
             f'{snapshot_time or "resolved at run time"} ===')
    if out.log_path:
      out.line(f'log: {out.log_path} (libraries\' output; --verbose shows it here)')
    # TensorFlow and TFX are imported inside the session: their import-time
    # warnings go to the log too.
    from pipeline import local  # TFX
    from pipeline import report
    from pipeline import run_report
    try:
      local.run(cfg, snapshot_time=snapshot_time, bootstrap=bootstrap, force=force,
                sweep=sweep)
    except Exception as e:  # pylint: disable=broad-except
      failure = e
    seconds = time.time() - start
    summary = report.summarize(cfg, label)
    lines = report.text(summary).splitlines()
    try:
      report_line = f'report: {run_report.build(cfg, summary_lines=lines)}'
    except Exception as e:  # pylint: disable=broad-except
      # A report is never worth failing a night over; say why it is missing.
      report_line = f'report: not written ({console.one_line(e)})'
    out.line(f'\n{label} {"FAILED" if failure else "finished"} in {seconds:.0f}s')
    out.line('\n'.join(lines))
    out.line(report_line)
    if out.log_path:
      out.line(f'log: {out.log_path}')
    if failure is not None:
      out.line(f'error: {out.failure or console.one_line(failure)}')
  return 1 if failure is not None else 0


def _quietly(cfg: config_lib.Config, verbose: bool):
  """console.quietly under the pipeline's output root."""
  from pipeline import console  # pylint: disable=g-import-not-at-top
  return console.quietly(cfg.local_root(), verbose)


def cmd_run(parser, args) -> int:
  """Runs the DAG locally (BeamDagRunner) and prints what it did."""
  cfg = _load(parser, args)
  snapshot_time = args.snapshot_time
  if args.bootstrap:
    return run_once(cfg, snapshot_time, True, 'bootstrap', args.force, args.verbose)
  if args.auto_bootstrap:
    with _quietly(cfg, args.verbose):
      from pipeline import report  # TFX
      baseline = report.has_baseline(cfg)
      t = None if baseline else resolve_t(cfg, snapshot_time)
    if not baseline:
      # The first baseline is the production model served as tonight's eval
      # days began (T - E): the baseline is what served the eval clicks
      # (ServedBaseline), so tonight's distilled run has something to be
      # gated against (and may push).
      eval_start = t - datetime.timedelta(days=cfg.window.eval_days)
      code = run_once(cfg, eval_start.isoformat(), True,
                      'bootstrap (no baseline yet)', verbose=args.verbose)
      if code:
        return code
      snapshot_time = t.isoformat()
  return run_once(cfg, snapshot_time, False, 'run', args.force, args.verbose)


def cmd_nightly(parser, args) -> int:
  """One local night, as cron runs it: T from window.snapshot_policy (or
  --snapshot-time for a backfill); no implicit bootstrap (a pipeline without a
  baseline fails with the bootstrap message); a night whose T is already served
  skips everything after the ExampleGen unless --force."""
  cfg = _load(parser, args)
  with _quietly(cfg, args.verbose):
    t = resolve_t(cfg, args.snapshot_time)
  return run_once(cfg, t.isoformat(), False, f'nightly {t.isoformat()}', args.force,
                  args.verbose)


def cmd_sweep(parser, args) -> int:
  """A sweep run: the whole DAG with the Tuner before the student, which
  trains with the best trial's values; the values are recorded under the
  config's fingerprint for the nightly runs (sweep.reuse). The config must
  have sweep.tune_fraction > 0, and the nightly config the same value."""
  cfg = _load(parser, args)
  if not cfg.sweep.tune_fraction > 0:
    parser.exit(2, 'error: sweep.tune_fraction: a sweep run needs a tune split '
                '(e.g. --set sweep.tune_fraction=0.1)\n')
  with _quietly(cfg, args.verbose):
    t = resolve_t(cfg, args.snapshot_time)
  return run_once(cfg, t.isoformat(), False, f'sweep {t.isoformat()}', True,
                  args.verbose, sweep=True)


def _template(cfg, args) -> str:
  return args.template or os.path.join(cfg.paths.output_root, 'vertex',
                                       f'{cfg.pipeline_name}.json')


def _vertex(parser, fn):
  """Runs `fn`, turning a missing vertex.* key into a usage error."""
  from pipeline import vertex  # TFX, aiplatform
  try:
    return fn(vertex)
  except config_lib.ConfigError as e:
    parser.exit(2, f'error: {e}\n')


def cmd_compile(parser, args) -> int:
  """Compiles the pipeline for Vertex AI Pipelines (KubeflowV2DagRunner); offline."""
  cfg = _load(parser, args)
  args.template = args.output
  path = _vertex(parser, lambda v: v.compile_pipeline(cfg, _template(cfg, args),
                                                      sweep=args.sweep))
  print(f'compiled {path}')
  return 0


def cmd_submit(parser, args) -> int:
  """Submits one run of a compiled pipeline to Vertex AI (aiplatform.PipelineJob)."""
  cfg = _load(parser, args)
  name = _vertex(parser, lambda v: v.submit(cfg, _template(cfg, args),
                                            args.snapshot_time or '',
                                            force=args.force))
  print(f'submitted {name}')
  return 0


def cmd_schedule(parser, args) -> int:
  """Creates the nightly Vertex AI PipelineJobSchedule of a compiled pipeline."""
  cfg = _load(parser, args)
  name = _vertex(parser, lambda v: v.schedule(cfg, _template(cfg, args)))
  print(f'scheduled {name} ({cfg.vertex.schedule.time_zone} {cfg.vertex.schedule.cron}, '
        f'at most {cfg.vertex.schedule.max_concurrent_runs} at a time)')
  return 0


SCHEMA_FILE = 'schema.pbtxt'
CONTRACT_FILE = 'serving_contract.md'


def schema_files(cfg: config_lib.Config, out_dir: str = '') -> dict:
  """{path: text} of the dataset's generated schema and serving contract, beside
  its spec (or in `out_dir`)."""
  from config import loader  # pylint: disable=g-import-not-at-top
  if not out_dir:
    if not cfg.dataset_file:
      raise config_lib.ConfigError('dataset_file: the dataset comes from no file; '
                                   'give --out')
    out_dir = os.path.dirname(loader.dataset_path(cfg.dataset_file))
  return {os.path.join(out_dir, SCHEMA_FILE): dataset_lib.schema_text(cfg.dataset),
          os.path.join(out_dir, CONTRACT_FILE): dataset_lib.contract_markdown(
              cfg.dataset)}


def cmd_schema(parser, args) -> int:
  """Writes the dataset's TFDV schema and serving input contract, generated from
  its spec, beside the spec (what the Vertex image carries; local runs generate
  their own), or with --check fails when they differ from the spec's."""
  cfg = _load(parser, args)
  try:
    files = schema_files(cfg, args.out)
  except config_lib.ConfigError as e:
    parser.exit(2, f'error: {e}\n')
  stale = []
  for path, text in files.items():
    current = open(path).read() if os.path.exists(path) else None
    if current == text:
      continue
    if args.check:
      stale.append(path)
      continue
    with open(path, 'w') as f:
      f.write(text)
    print(f'wrote {path}')
  if stale:
    parser.exit(1, f'error: {", ".join(stale)} differ from the dataset spec '
                f'{cfg.dataset_file}; run python -m pipeline.cli schema\n')
  if args.check:
    print(f'{", ".join(files)}: up to date')
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipeline.cli',
                                   description='Run, compile and schedule the pipeline.')
  subs = parser.add_subparsers(dest='command', required=True)
  run = subs.add_parser('run', help='run the DAG locally (BeamDagRunner)',
                        description=cmd_run.__doc__)
  _common(run)
  run.add_argument('--snapshot-time', help='T (ISO 8601); default: the config or '
                   'resolved at run time by window.snapshot_policy')
  mode = run.add_mutually_exclusive_group()
  mode.add_argument('--bootstrap', action='store_true',
                    help='the first run: the production recipe through the same '
                    'quantize / evaluate / push path, pushed as the first baseline')
  mode.add_argument('--auto-bootstrap', action='store_true',
                    help='if this pipeline has no baseline yet, bootstrap at the '
                    'eval start T - E first (what make run does)')
  _force(run)
  _verbose(run)
  run.set_defaults(fn=cmd_run)

  nightly = subs.add_parser('nightly', help='one local night (what cron runs)',
                            description=cmd_nightly.__doc__)
  _common(nightly)
  nightly.add_argument('--snapshot-time', help='T (ISO 8601), for a backfill')
  _force(nightly)
  _verbose(nightly)
  nightly.set_defaults(fn=cmd_nightly)

  sweep = subs.add_parser('sweep', help='a local sweep run (Tuner, then the '
                          'student with the best values, recorded)',
                          description=cmd_sweep.__doc__)
  _common(sweep)
  sweep.add_argument('--snapshot-time', help='T (ISO 8601); default: the config or '
                     'resolved by window.snapshot_policy')
  _verbose(sweep)
  sweep.set_defaults(fn=cmd_sweep)
  rep = subs.add_parser('report', help='rebuild the HTML report of a past local run',
                        description=cmd_report.__doc__)
  _common(rep)
  rep.add_argument('--run-id', help='the run (a pipeline_run context; default: the '
                   'latest; --list shows them)')
  rep.add_argument('--list', action='store_true', help='list the runs and exit')
  rep.set_defaults(fn=cmd_report)

  template_help = 'the compiled PipelineJob JSON (default: ' \
                  '<paths.output_root>/vertex/<pipeline_name>.json)'
  comp = subs.add_parser('compile', help='compile for Vertex AI Pipelines',
                         description=cmd_compile.__doc__)
  _common(comp)
  comp.add_argument('--output', help=template_help)
  comp.add_argument('--sweep', action='store_true',
                    help='the sweep run (Tuner with parallel trials) instead of '
                    'the nightly one')
  comp.set_defaults(fn=cmd_compile)

  sub = subs.add_parser('submit', help='submit one Vertex AI pipeline run',
                        description=cmd_submit.__doc__)
  _common(sub)
  sub.add_argument('--template', help=template_help)
  sub.add_argument('--snapshot-time', help='T (ISO 8601); default: resolved when '
                   'the run starts')
  _force(sub)
  sub.set_defaults(fn=cmd_submit)

  sched = subs.add_parser('schedule', help='schedule nightly Vertex AI runs',
                          description=cmd_schedule.__doc__)
  _common(sched)
  sched.add_argument('--template', help=template_help)
  sched.set_defaults(fn=cmd_schedule)

  schema = subs.add_parser('schema', help="write the dataset's TFDV schema and "
                           'serving contract from its spec', description=cmd_schema.__doc__)
  _common(schema)
  schema.add_argument('--check', action='store_true',
                      help='fail if the files beside the spec differ from it')
  schema.add_argument('--out', default='', help='directory (default: beside the spec)')
  schema.set_defaults(fn=cmd_schema)
  args = parser.parse_args(argv)
  return args.fn(parser, args)


if __name__ == '__main__':
  sys.exit(main())
