"""Shared fixtures (the whole repository: tests/ and the tests beside components)."""

import datetime
import os
from unittest import mock

import pytest

# Keras 2 everywhere, as the Makefile sets for every process (tests may be run
# with a bare `pytest` too).
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import config as config_lib  # pylint: disable=g-import-not-at-top
from tests.helpers import E2E_OVERRIDES  # pylint: disable=g-import-not-at-top
from tests.helpers import E2ERun  # pylint: disable=g-import-not-at-top
from tests.helpers import make_world  # pylint: disable=g-import-not-at-top
from tests import app_installs  # pylint: disable=g-import-not-at-top
from tfx.utils import dependency_utils  # pylint: disable=g-import-not-at-top
from world import generator  # pylint: disable=g-import-not-at-top


# The session fixtures that run whole pipelines, each built once per worker that
# asks for it: `make test` runs pytest-xdist with --dist loadgroup, so every test
# of one fixture lands on the same worker and each DAG runs once.
_ONE_WORKER_FIXTURES = ('e2e', 'app_e2e')


# First: xdist's own hook reads the xdist_group marks into the node ids (it
# sets Node._nodeid, which pytest 9.2 no longer reads: the lock pins 9.1).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
  for item in items:
    for name in _ONE_WORKER_FIXTURES:
      if name in getattr(item, 'fixturenames', ()):
        item.add_marker(pytest.mark.xdist_group(name))
        break


@pytest.fixture(scope='session', autouse=True)
def no_tfx_sdist_per_beam_component():
  """Local Beam components run without TFX's per-executor sdist of itself.

  Every Beam executor TFX starts (5 per night) copies TFX's 48 MB install into a
  new /tmp directory and runs `setup.py sdist` on it (~1 s on an idle core; the
  copies are never removed), only to add `--extra_package` for remote workers.
  The DirectRunner never stages packages, so nothing a test sees changes. TFX
  skips it too when the Beam args name a container image, as pipeline/vertex.py's
  do.
  """
  with mock.patch.object(dependency_utils, 'make_beam_dependency_flags',
                         lambda beam_pipeline_args: list(beam_pipeline_args)):
    yield


@pytest.fixture(scope='session')
def mature_world(tmp_path_factory):
  """60k clicks over 20 days with every conversion in the log (90-day horizon)."""
  return make_world(tmp_path_factory.mktemp('mature_world'), [
      'world.num_clicks=60000', 'world.days=20', 'world.seed=7',
      'world.conversion_horizon_days=90', 'world.base_rate=0.1'])


@pytest.fixture(scope='session')
def small_world(tmp_path_factory):
  """3,000 clicks over 6 days (2026-01-01..06): the bad-input and cloud-path
  executor tests plant defects in copies of it."""
  return make_world(tmp_path_factory.mktemp('small_world'), [
      'world.num_clicks=3000', 'world.days=6', 'world.seed=3'])



@pytest.fixture
def restore_op_determinism():
  """set_seed's op determinism is process-wide: the other tests run without it."""
  from tensorflow.python.framework import config as tf_config  # pylint: disable=g-import-not-at-top
  was = tf_config.is_op_determinism_enabled()
  yield
  if not was:
    tf_config.disable_op_determinism()

@pytest.fixture(scope='session')
def e2e(tmp_path_factory):
  """Nights of the whole DAG with BeamDagRunner on one tiny world, caching off,
  the student warm-starting from the served model (end = the world's end):

    bootstrap  T = end - 11d production recipe, no baseline: pushed first;
                             trained 10 steps, a production model far from
                             the truth, so that the distilled night is better
                             than it by well more than 6k eval clicks
                             resolve (the promotion runs its default rule;
                             the truth test checks the gap)
    kd_killed  T = end - 6d  the CLI in its own process, SIGKILLed while the
                             teacher trains: nothing pushed
    kd         T = end - 6d  the same night again; distilled, gated against
                             the bootstrap (served as of its eval start,
                             end - 10d): pushed
    worse      T = end       (resolved at run time) production recipe, gated
                             against kd (served as of end - 4d): not
                             promoted, nothing pushed
    backfill   T = end - 7d  the next run after the unblessed night, older
                             than the served kd: gated against the version
                             served as of its eval start, end - 11d (the
                             bootstrap's)
    kd_again   T = end - 6d  already served: skips after ServedBaseline
  """
  root = tmp_path_factory.mktemp('e2e')
  cfg = config_lib.load_config(None, E2E_OVERRIDES + [
      f'paths.data_root={root}/world', f'paths.output_root={root}/outputs',
      f'paths.serving_dir={root}/serving'])
  generator.generate(cfg, cfg.paths.data_root, log=lambda *_: None)
  end = cfg.world.start() + datetime.timedelta(days=cfg.world.days)
  nights = E2ERun(cfg, cfg.paths.data_root, default_night='kd')
  day = datetime.timedelta(days=1)
  nights.night('bootstrap', (end - 11 * day).isoformat(), bootstrap=True,
               overrides=['distill.recipe=production', 'model.student.train_steps=10'])
  # SIGKILLed while its teacher trains, then the same night again (issue 21).
  nights.killed_night('kd_killed', (end - 6 * day).isoformat(), node='teacher')
  nights.night('kd', (end - 6 * day).isoformat())
  # T left to the run (data_end policy: the world's end).
  nights.night('worse', None, overrides=['distill.recipe=production'])
  nights.night('backfill', (end - 7 * day).isoformat())
  nights.night('kd_again', (end - 6 * day).isoformat())
  return nights


# The second dataset's nights: hour-scale windows, so a short window suffices.
APP_E2E_OVERRIDES = [
    'window.days=5', 'window.eval_days=1', 'window.teacher_lag_hours=40',
    'model.teacher.train_steps=200', 'model.teacher.batch_size=256',
    'model.student.train_steps=120', 'model.student.batch_size=256',
    'quantizer.latency_samples=200', 'promotion.latency_samples=500',
    'model.student_warm_start=true', 'beam.direct_running_mode=in_memory',
]


@pytest.fixture(scope='session')
def app_e2e(tmp_path_factory):
  """Two nights of the whole DAG on a dataset of another shape (tests/
  app_installs.py: string ids and categoricals, no browser, tCPA, panel or
  truth, three hour-scale windows, one teacher-only feature), T = end - 1 day:

    bootstrap  production recipe, nothing served: pushed first
    kd         T = end, after a one-line edit of the spec file added a serving
               feature (device_score, already in the logs): distilled, gated
               against the bootstrap under the default promotion rule
  """
  root = tmp_path_factory.mktemp('app_e2e')
  logs = app_installs.generate(n=12_000, days=8, seed=1)
  world = app_installs.write(logs, str(root / 'logs'))
  spec = app_installs.write_spec(str(root / 'dataset.yaml'))
  base = [f'dataset_file={spec}'] + app_installs.OVERRIDES + APP_E2E_OVERRIDES
  cfg = config_lib.load_config(None, base + [
      f'paths.data_root={world}', f'paths.output_root={root}/outputs',
      f'paths.serving_dir={root}/serving'])
  nights = E2ERun(cfg, world, default_night='kd', base_overrides=base)
  end = app_installs.START + datetime.timedelta(days=8)
  nights.night('bootstrap', (end - datetime.timedelta(days=1)).isoformat(),
               bootstrap=True, overrides=['distill.recipe=production'])
  app_installs.write_spec(spec, extra_feature=True)  # the one-file change
  nights.night('kd', end.isoformat())
  return nights
