"""End-to-end: a night SIGKILLed while a Trainer runs, then the same night again
(conftest.e2e's `kd_killed` and `kd`; issue 21). The push's own restarts are
tested at the executor level (tests/test_push.py)."""

import os

import pytest

from components.pusher import push
from pipeline import local

pytestmark = pytest.mark.e2e


def test_a_night_killed_in_its_trainer_leaves_serving_as_it_was(e2e):
  states = e2e.states['kd_killed']
  # The killed execution never finished; nothing after it ran.
  assert states['teacher'] == 'RUNNING', states
  assert not {'BulkInferrer', 'student', 'Quantizer', 'Evaluator',
              'Pusher'} & set(states)
  assert e2e.serving['kd_killed'] == e2e.serving['bootstrap']


def test_the_same_night_again_completes_and_serves_exactly_one_version(e2e):
  states = e2e.states['kd']
  assert all(s in ('COMPLETE', 'CACHED') for s in states.values()), states
  assert states['teacher'] == 'COMPLETE'
  version = local.custom_property(e2e.artifact('Pusher', 'pushed_model', 'kd'),
                                  'pushed_version')
  label = version.split('-')[0]
  after_kd = {p.split(os.sep)[0] for p in e2e.serving['kd']}
  # One complete version for the night's T, nothing partial or temporary beside
  # the complete versions.
  assert [v for v in after_kd if v.startswith(label)] == [version]
  assert not [v for v in after_kd if v.startswith(push.TMP_PREFIX)]
  assert after_kd <= set(push.complete_versions(e2e.paths.serving_dir))
