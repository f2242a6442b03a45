"""What every benchmark result records: when, on what code, with what config."""

import datetime
import json
import os
import platform
import subprocess


def git_sha() -> str:
  """The checked-out commit, with '-dirty' when the tree has changes."""
  try:
    sha = subprocess.run(['git', 'rev-parse', 'HEAD'], check=True,
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain'], check=True,
                           capture_output=True, text=True).stdout.strip()
    return sha + ('-dirty' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


def provenance(cfg) -> dict:
  """Seed, config, git SHA, machine and time of a benchmark run."""
  return {
      'git_sha': git_sha(),
      'seed': cfg.world.seed,
      'config': json.loads(cfg.to_json()),
      'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                  'python': platform.python_version()},
      'utc': datetime.datetime.now(datetime.timezone.utc).isoformat(),
  }


def write_json(path: str, result: dict) -> None:
  # Keys keep the order the result was built in: the docs/benchmarks.md tables are
  # generated from the JSON and list models in that order.
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
  print(f'wrote {path}')
