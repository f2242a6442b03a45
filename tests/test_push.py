"""Versioned, atomic, idempotent push."""

import datetime
import os
import signal
import subprocess
import sys
import uuid
from unittest import mock

import pytest
import tensorflow as tf

from components.pusher import push
from tests import helpers

T1 = datetime.datetime(2026, 2, 5, tzinfo=datetime.timezone.utc)
T2 = datetime.datetime(2026, 2, 6, tzinfo=datetime.timezone.utc)


def test_push_is_versioned_and_marked_last(tmp_path):
  base = str(tmp_path / 'serving')
  result = push.push(base, T1, b'model-a', {'blessed': 1})
  assert result['pushed'] and result['version'].startswith('20260205T000000Z-')
  files = helpers.serving_listing(base)
  assert set(files) == {f'{result["version"]}/{n}' for n in
                        (push.MODEL_FILE, push.METADATA_FILE, push.MARKER)}
  assert push.latest(base) == os.path.join(base, result['version'])


def test_same_t_pushes_nothing_new_and_earlier_versions_are_kept(tmp_path):
  base = str(tmp_path / 'serving')
  first = push.push(base, T1, b'model-a', {})
  before = helpers.serving_listing(base)
  again = push.push(base, T1, b'model-a', {})
  other = push.push(base, T1, b'model-b', {})  # a retrained model, same night
  assert not again['pushed'] and not other['pushed']
  assert helpers.serving_listing(base) == before
  second = push.push(base, T2, b'model-b', {})
  assert second['pushed']
  assert push.complete_versions(base) == [first['version'], second['version']]


def test_a_crash_before_the_marker_leaves_no_complete_version(tmp_path):
  base = str(tmp_path / 'serving')
  good = push.push(base, T1, b'model-a', {})
  with pytest.raises(RuntimeError, match='simulated crash'):
    push.push(base, T2, b'model-b', {}, fail_before_marker=True)
  # The files are there, unmarked: a reader still takes yesterday's model.
  assert push.latest(base) == os.path.join(base, good['version'])
  assert push.complete_versions(base) == [good['version']]
  # The next attempt completes it.
  retry = push.push(base, T2, b'model-b', {})
  assert retry['pushed'] and push.complete_versions(base)[-1] == retry['version']


class Killed(BaseException):
  """Stands for SIGKILL: nothing after it runs, no `except Exception` sees it."""


MUTATIONS = ('makedirs', 'rename', 'rmtree', 'remove', 'GFile')


def count_mutations(base):
  """How many file-system mutations one push of T2 makes (writes count once)."""
  calls = []
  real = {n: getattr(tf.io.gfile, n) for n in MUTATIONS}

  def spy(name):
    def call(*args, **kwargs):
      if name != 'GFile' or 'w' in (args[1:2] or (kwargs.get('mode', 'r'),))[0]:
        calls.append(name)
      return real[name](*args, **kwargs)
    return call
  with mock.patch.multiple(tf.io.gfile, **{n: spy(n) for n in MUTATIONS}):
    push.push(base, T2, b'model-b', {}, extra_files={'warm_start/w.h5': b'w'})
  return len(calls)


def killed_at(base, step):
  """A push of T2 killed just before its `step`-th file-system mutation."""
  calls = []
  real = {n: getattr(tf.io.gfile, n) for n in MUTATIONS}

  def killer(name):
    def call(*args, **kwargs):
      if name != 'GFile' or 'w' in (args[1:2] or (kwargs.get('mode', 'r'),))[0]:
        calls.append(name)
        if len(calls) == step:
          raise Killed(name)
      return real[name](*args, **kwargs)
    return call
  with mock.patch.multiple(tf.io.gfile, **{n: killer(n) for n in MUTATIONS}):
    with pytest.raises(Killed):
      push.push(base, T2, b'model-b', {}, extra_files={'warm_start/w.h5': b'w'})


@pytest.mark.parametrize('where', ['local', 'ram'])
def test_a_push_killed_at_any_step_then_rerun_leaves_one_complete_version(
    where, tmp_path):
  probe = (str(tmp_path / 'probe') if where == 'local'
           else f'ram://{uuid.uuid4().hex[:8]}/probe')
  steps = count_mutations(probe)
  assert steps >= 6
  for step in range(1, steps + 1):
    base = (str(tmp_path / f'serving-{step}') if where == 'local'
            else f'ram://{uuid.uuid4().hex[:8]}/serving')
    old = push.push(base, T1, b'model-a', {})['version']
    killed_at(base, step)
    # Until the rerun, readers see yesterday's version only.
    assert push.complete_versions(base) == [old], step
    again = push.push(base, T2, b'model-b', {}, extra_files={'warm_start/w.h5': b'w'})
    assert again['pushed'], step
    assert push.complete_versions(base) == [old, again['version']], step
    # No partial directory is left beside the two complete versions.
    assert sorted(n.rstrip('/') for n in tf.io.gfile.listdir(base)) == [
        old, again['version']], step
    with tf.io.gfile.GFile(f'{base}/{again["version"]}/{push.MODEL_FILE}', 'rb') as f:
      assert f.read() == b'model-b', step


KILL_DURING_PUSH = '''
import os, signal, sys, datetime
import tensorflow as tf
from components.pusher import push
def rename(*args, **kwargs):  # SIGKILL between the files and the rename
  os.kill(os.getpid(), signal.SIGKILL)
tf.io.gfile.rename = rename
push.push(sys.argv[1], datetime.datetime(2026, 2, 6, tzinfo=datetime.timezone.utc),
          b'model-b', {})
'''


def test_sigkill_during_the_push_then_the_same_push_again(tmp_path):
  base = str(tmp_path / 'serving')
  old = push.push(base, T1, b'model-a', {})['version']
  killed = subprocess.run([sys.executable, '-c', KILL_DURING_PUSH, base],
                          cwd=helpers.ROOT, check=False, capture_output=True,
                          env={**os.environ, 'TF_USE_LEGACY_KERAS': '1'})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert push.complete_versions(base) == [old]
  assert any(n.startswith(push.TMP_PREFIX) for n in os.listdir(base))
  again = push.push(base, T2, b'model-b', {})
  assert sorted(os.listdir(base)) == [old, again['version']]
  assert push.complete_versions(base) == [old, again['version']]
