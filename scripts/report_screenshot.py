"""Regenerates the README's report screenshot (docs/run-report.png).

Rebuilds the report of a finished local run from its ML Metadata (as
`python -m pipeline.cli report` does) and photographs it in headless Chromium:

  python scripts/report_screenshot.py [--config C] [--set k=v ...] [--run-id R]
                                      [--out docs/run-report.png]

Default: the latest run of the default config's pipeline (after `make run`).
"""

import argparse
import os
import sys

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
import config as config_lib
from pipeline import run_report
from tests import browser


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config')
  parser.add_argument('--set', dest='overrides', action='append', default=[],
                      metavar='KEY=VALUE')
  parser.add_argument('--run-id', help='default: the latest run')
  parser.add_argument('--out', default=os.path.join(ROOT, 'docs', 'run-report.png'))
  parser.add_argument('--height', type=int, default=3000,
                      help='pixels of the page to keep (from the top)')
  args = parser.parse_args(argv)
  cfg = config_lib.load_config(args.config, args.overrides)
  page = run_report.build(cfg, args.run_id)
  browser.screenshot(page, args.out, width=1200, height=args.height)
  print(f'{args.out} (from {page})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
