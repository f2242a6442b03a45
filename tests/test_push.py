"""Versioned, atomic, idempotent push."""

import datetime
import os

import pytest

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
