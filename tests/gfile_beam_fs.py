"""A test-only Beam FileSystem for `ram://`, backed by tf.io.gfile.

Beam finds a file system by scheme among `FileSystem` subclasses, so importing
this module is enough: Beam transforms (TFX's WriteSplit) then read and write
TensorFlow's in-memory `ram://` file system, and an executor test on ram://
artifacts fails on any local-only call (os, open, glob, shutil), as it would
fail on gs://. Only for in-process runners (DirectRunner in_memory): ram://
lives in this process's memory.
"""

from typing import BinaryIO, List

import tensorflow as tf
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystem import CompressedFile
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.filesystem import FileSystem

SCHEME = 'ram'


class _Writer:
  """A gfile write handle that counts its bytes: ram:// files cannot Tell(),
  and Beam's CompressedFile asks where a new file is."""

  def __init__(self, path: str):
    self._file = tf.io.gfile.GFile(path, 'wb')
    self._pos = 0
    self.closed = False
    self.mode = 'wb'  # CompressedFile reads it

  def write(self, data) -> int:
    self._file.write(data)
    self._pos += len(data)
    return len(data)

  def tell(self) -> int:
    return self._pos

  def flush(self):
    self._file.flush()

  def close(self):
    if not self.closed:
      self._file.close()
      self.closed = True

  def seekable(self) -> bool:
    return False


class RamFileSystem(FileSystem):
  """`ram://` through tf.io.gfile (TensorFlow's RamFileSystem)."""

  @classmethod
  def scheme(cls):
    return SCHEME

  def join(self, basepath: str, *paths: str) -> str:
    return '/'.join([basepath.rstrip('/')] + [p.strip('/') for p in paths])

  def split(self, path: str):
    head, _, tail = path.rstrip('/').rpartition('/')
    return head, tail

  def mkdirs(self, path):
    tf.io.gfile.makedirs(path)

  def has_dirs(self):
    return True

  def _list(self, dir_or_prefix):
    if not tf.io.gfile.exists(dir_or_prefix):
      return
    for root, _, files in tf.io.gfile.walk(dir_or_prefix):
      for name in files:
        path = self.join(root, name)
        yield FileMetadata(path, self.size(path), self.last_updated(path))

  def _open(self, path, mode, compression_type) -> BinaryIO:
    compression_type = FileSystem._get_compression_type(path, compression_type)
    raw = _Writer(path) if mode == 'wb' else tf.io.gfile.GFile(path, mode)
    if compression_type == CompressionTypes.UNCOMPRESSED:
      return raw
    return CompressedFile(raw, compression_type=compression_type)

  def create(self, path, mime_type='application/octet-stream',
             compression_type=CompressionTypes.AUTO) -> BinaryIO:
    tf.io.gfile.makedirs(self.split(path)[0])
    return self._open(path, 'wb', compression_type)

  def open(self, path, mime_type='application/octet-stream',
           compression_type=CompressionTypes.AUTO) -> BinaryIO:
    return self._open(path, 'rb', compression_type)

  def _each(self, what: str, fn, *lists: List[str]):
    errors = {}
    for args in zip(*lists):
      try:
        fn(*args)
      except Exception as e:  # pylint: disable=broad-except
        errors[args] = e
    if errors:
      raise BeamIOError(f'{what} operation failed', errors)

  def copy(self, source_file_names, destination_file_names):
    self._each('Copy', lambda s, d: tf.io.gfile.copy(s, d, overwrite=True),
               source_file_names, destination_file_names)

  def rename(self, source_file_names, destination_file_names):
    self._each('Rename', lambda s, d: tf.io.gfile.rename(s, d, overwrite=True),
               source_file_names, destination_file_names)

  def exists(self, path: str) -> bool:
    return tf.io.gfile.exists(path)

  def size(self, path: str) -> int:
    return tf.io.gfile.stat(path).length

  def last_updated(self, path):
    return tf.io.gfile.stat(path).mtime_nsec / 1e9

  def checksum(self, path):
    return str(self.size(path))

  def metadata(self, path):
    return FileMetadata(path, self.size(path), self.last_updated(path))

  def delete(self, paths):
    def _delete(path):
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
      else:
        tf.io.gfile.remove(path)
    self._each('Delete', _delete, paths)
