"""Shared fixtures: small generated worlds (fast to make, shared per session)."""

import os

import pytest

# Keras 2 everywhere, as the Makefile sets for every process (tests may be run
# with a bare `pytest` too).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from pipeline import config as config_lib  # pylint: disable=g-import-not-at-top
from world import generator  # pylint: disable=g-import-not-at-top


def make_world(root, overrides=()):
  """Generates a world under `root` and returns (config, path)."""
  cfg = config_lib.load_config(None, list(overrides))
  path = os.path.join(str(root), 'world')
  generator.generate(cfg, path, log=lambda *_: None)
  return cfg, path


@pytest.fixture(scope='session')
def mature_world(tmp_path_factory):
  """60k clicks over 20 days with every conversion in the log (90-day horizon)."""
  return make_world(tmp_path_factory.mktemp('mature_world'), [
      'world.num_clicks=60000', 'world.days=20', 'world.seed=7',
      'world.conversion_horizon_days=90', 'world.base_rate=0.1'])
