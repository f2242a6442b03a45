"""Versioned, atomic, idempotent push to a local directory or a gs:// base.

Layout under the base:
  <T>-<fingerprint>/model.tflite     the quantized model
  <T>-<fingerprint>/metadata.json    T, fingerprint, lineage
  <T>-<fingerprint>/warm_start/      the float student's weights (the next
                                     night's warm start; serving ignores them)
  <T>-<fingerprint>/_COMPLETE        written last: only marked versions exist
where T is the snapshot time as YYYYmmddTHHMMSSZ and the fingerprint the first 16
hex digits of the model's SHA-256. Writing goes to a temporary name that readers
never take (no marker), then the directory is renamed (atomic on a local file
system; on GCS the marker alone decides), then the marker is written. A push for
a T that already has a complete version does nothing: re-running a night pushes
nothing new. A push for a T without one first removes what a killed push of that
T left (temporaries, unmarked versions), so after a restart exactly one complete
version of T remains. Earlier versions are kept.
"""

import datetime
import hashlib
import json
import os
import posixpath
import uuid
from typing import Dict, List, Optional

import tensorflow as tf

MARKER = '_COMPLETE'
MODEL_FILE = 'model.tflite'
METADATA_FILE = 'metadata.json'
TMP_PREFIX = '.tmp-'
# metadata.json key: the student's recipe fingerprint (models/export.py), which
# ServedBaseline hands to the next night's promotion step.
RECIPE_FINGERPRINT = 'recipe_fingerprint'


def fingerprint(model: bytes) -> str:
  return hashlib.sha256(model).hexdigest()[:16]


def t_label(snapshot: datetime.datetime) -> str:
  return snapshot.astimezone(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')


def version_name(snapshot: datetime.datetime, model: bytes) -> str:
  return f'{t_label(snapshot)}-{fingerprint(model)}'


def _join(base: str, *parts: str) -> str:
  return posixpath.join(base, *parts) if base.startswith('gs://') else os.path.join(
      base, *parts)


def complete_versions(base: str) -> List[str]:
  """Complete versions under `base`, oldest first (names sort by T)."""
  if not tf.io.gfile.isdir(base):
    return []
  out = []
  for name in tf.io.gfile.listdir(base):
    name = name.rstrip('/')
    if name.startswith(TMP_PREFIX):
      continue
    if tf.io.gfile.exists(_join(base, name, MARKER)):
      out.append(name)
  return sorted(out)


def latest(base: str) -> Optional[str]:
  """The newest complete version's directory, what a server would load."""
  name = newest(base)
  return version_path(base, name) if name else None


def version_path(base: str, name: str) -> str:
  """The directory of version `name` under `base`."""
  return _join(base, name)


def version_t(name: str) -> datetime.datetime:
  """T (aware, UTC) of a version name `<YYYYmmddTHHMMSSZ>-<fingerprint>`.

  Raises:
    ValueError: `name` is not a version name.
  """
  label = name.rstrip('/').split('-', 1)[0]
  try:
    # The inverse of t_label.
    t = datetime.datetime.strptime(label, '%Y%m%dT%H%M%SZ')
  except ValueError as e:
    raise ValueError(f'{name!r} is not a version name (<YYYYmmddTHHMMSSZ>-'
                     '<fingerprint>)') from e
  return t.replace(tzinfo=datetime.timezone.utc)


def _utc(t: datetime.datetime) -> datetime.datetime:
  # Naive times are UTC, as observation.snapshot.parse_utc takes them.
  if t.tzinfo is None:
    t = t.replace(tzinfo=datetime.timezone.utc)
  return t.astimezone(datetime.timezone.utc)


def served_as_of(base: str, t: datetime.datetime) -> Optional[str]:
  """The newest complete version whose T <= `t`: what was served at `t`."""
  t = _utc(t)
  versions = [v for v in complete_versions(base) if version_t(v) <= t]
  return versions[-1] if versions else None


def version_at(base: str, t: datetime.datetime) -> Optional[str]:
  """The complete version whose T == `t`, if any (push keeps at most one)."""
  t = _utc(t)
  versions = [v for v in complete_versions(base) if version_t(v) == t]
  return versions[-1] if versions else None


def newest(base: str) -> Optional[str]:
  """The newest complete version's name (latest() gives its directory)."""
  versions = complete_versions(base)
  return versions[-1] if versions else None


def _move_dir(src: str, dst: str) -> None:
  """Moves a directory tree: one atomic rename on a local file system, else file
  by file (object stores have no directories to rename; TensorFlow's ram:// and
  some object-store plugins rename a directory's name but not its files). The
  marker written afterwards is the commit point either way."""
  if '://' not in src:
    tf.io.gfile.rename(src, dst)
    return
  files = [(root, name) for root, _, names in tf.io.gfile.walk(src) for name in names]
  for root, name in files:
    rel = root[len(src):].strip('/')
    target = _join(dst, rel) if rel else dst
    tf.io.gfile.makedirs(target)
    tf.io.gfile.rename(_join(root, name), _join(target, name), overwrite=True)
  tf.io.gfile.rmtree(src)


def _remove_dead_attempts(base: str, label: str) -> None:
  """Removes what killed pushes of T left: its temporaries and unmarked
  versions (T has no complete version, so none of them is live; runs of one
  pipeline push one at a time: flock locally, max_concurrent_runs on Vertex)."""
  if not tf.io.gfile.isdir(base):
    return
  for entry in tf.io.gfile.listdir(base):
    entry = entry.rstrip('/')
    if entry.startswith((f'{TMP_PREFIX}{label}-', f'{label}-')):
      tf.io.gfile.rmtree(_join(base, entry))


def read_metadata(version_dir: str) -> Dict:
  """A pushed version's metadata.json ({} when it has none)."""
  path = os.path.join(version_dir, METADATA_FILE)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def read_file(version_dir: str, name: str = MODEL_FILE) -> Optional[bytes]:
  """A file of a pushed version (its model by default), None when absent."""
  path = os.path.join(version_dir, name)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def push(base: str, snapshot: datetime.datetime, model: bytes, metadata: Dict,
         extra_files: Optional[Dict[str, bytes]] = None,
         fail_before_marker: bool = False) -> Dict:
  """Pushes `model` for T = `snapshot` unless T already has a complete version.

  Args:
    base: the serving directory (local or gs://).
    snapshot: T.
    model: the TFLite model's bytes.
    metadata: lineage written to metadata.json.
    extra_files: relative path -> bytes, written into the version before its
      marker (the warm-start weights).
    fail_before_marker: for crash-safety tests only: raise after the files are in
      place but before the marker.

  Returns:
    {'pushed': bool, 'version': name, 'path': dir, 'reason': text}
  """
  name = version_name(snapshot, model)
  label = t_label(snapshot)
  existing = [v for v in complete_versions(base) if v.startswith(label + '-')]
  if existing:
    return {'pushed': False, 'version': existing[-1],
            'path': _join(base, existing[-1]),
            'reason': f'T {label} already has a complete version {existing[-1]}; '
                      'nothing new is pushed'}
  _remove_dead_attempts(base, label)
  final = _join(base, name)
  tmp = _join(base, f'{TMP_PREFIX}{name}-{uuid.uuid4().hex[:8]}')
  tf.io.gfile.makedirs(tmp)
  with tf.io.gfile.GFile(_join(tmp, MODEL_FILE), 'wb') as f:
    f.write(model)
  for relative, content in (extra_files or {}).items():
    path = _join(tmp, *relative.split(os.sep))
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, 'wb') as f:
      f.write(content)
  meta = {**metadata, 'version': name, 'snapshot_time': snapshot.isoformat(),
          'fingerprint': fingerprint(model), 'sha256': hashlib.sha256(model).hexdigest()}
  with tf.io.gfile.GFile(_join(tmp, METADATA_FILE), 'w') as f:
    json.dump(meta, f, indent=1, sort_keys=True)
  _move_dir(tmp, final)
  if fail_before_marker:
    raise RuntimeError('simulated crash before the completion marker')
  with tf.io.gfile.GFile(_join(final, MARKER), 'w') as f:
    f.write(meta['sha256'])
  return {'pushed': True, 'version': name, 'path': final, 'reason': 'pushed'}
