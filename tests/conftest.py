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


# --- The shared end-to-end run (DESIGN §11: one tiny world, one pipeline root) --

E2E_OVERRIDES = [
    'world.num_clicks=24000', 'world.days=16', 'world.seed=11',
    'window.days=14', 'window.eval_days=1', 'window.teacher_lag_hours=40',
    'model.teacher.train_steps=400', 'model.teacher.batch_size=256',
    'model.student.train_steps=300', 'model.student.batch_size=256',
    'beam.direct_running_mode=in_memory',
]


class E2ERun:
  """A finished local run: its config, paths and ML Metadata."""

  def __init__(self, cfg, world):
    from pipeline import local  # pylint: disable=g-import-not-at-top
    self.cfg = cfg
    self.world = world
    self.paths = local.LocalPaths.from_config(cfg)

  def outputs(self, node_id):
    from pipeline import local  # pylint: disable=g-import-not-at-top
    return local.node_outputs(self.paths.metadata, self.cfg.pipeline_name, node_id)

  def artifact(self, node_id, key):
    (artifact,) = self.outputs(node_id)[key]
    return artifact

  def executions(self):
    from pipeline import local  # pylint: disable=g-import-not-at-top
    return local.node_executions(self.paths.metadata, self.cfg.pipeline_name)


@pytest.fixture(scope='session')
def e2e(tmp_path_factory):
  """The whole DAG, run once with BeamDagRunner on a tiny generated world."""
  from pipeline import local  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('e2e')
  cfg = config_lib.load_config(None, E2E_OVERRIDES + [
      f'paths.data_root={root}/world', f'paths.output_root={root}/outputs'])
  generator.generate(cfg, cfg.paths.data_root, log=lambda *_: None)
  local.run(cfg)
  return E2ERun(cfg, cfg.paths.data_root)
