"""Test helpers: small generated worlds and the shared end-to-end run."""

import os

from pipeline import config as config_lib
from world import generator


def make_world(root, overrides=()):
  """Generates a world under `root` and returns (config, path)."""
  cfg = config_lib.load_config(None, list(overrides))
  path = os.path.join(str(root), 'world')
  generator.generate(cfg, path, log=lambda *_: None)
  return cfg, path


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
