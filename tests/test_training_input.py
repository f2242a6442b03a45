"""Training's input streams from the example files (issue 33, docs/architecture.md §5).

Its peak memory is set by configuration (shuffle buffer, read parallelism,
batch), not by the number of training examples; and the same examples and seed
train the same model, whatever order the ExampleGen's runner delivered them in,
because the ExampleGen writes them into the same files in the same order
(WriteShards: hash-of-click_id shards, in hash order).
"""

import json
import os
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
# pylint: disable-next=g-direct-tensorflow-import

from components.example_gen import executor
from models import data
from models import training
from schemas import codec
from schemas import columns
from world import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARD = 12_500  # records per file
N = 50_000  # the smaller window; the larger is 2N
BATCH = 512
BUFFER = 10_000  # model.shuffle_buffer for the probe
# Peak RSS at 2N within 1.25x of N's, plus 64 MB for allocator noise. Measured
# on 2 cores: this input 866 MB at N and 866 MB at 2N; the old one (sort the
# split as one tensor, cache it parsed) 1,012 MB and 1,444 MB (1.43x, over the
# bound of 1,328 MB): it fails this test.
RATIO, SLACK_MB = 1.25, 64


def teacher_columns():
  """The columns the teacher's training input reads (features and targets)."""
  spec = synthetic.spec()
  names = [c.name for c in spec.teacher_features()]
  names += list(data.target_columns(spec.window_names())) + [spec.panel]
  return list(dict.fromkeys(names))


def example_columns(ids: np.ndarray, rng) -> dict:
  """Random values of the teacher's columns for clicks `ids`, all before the
  teacher's cutoff (so every example passes its filter)."""
  spec = synthetic.spec()
  n = len(ids)
  cols = {columns.CLICK_ID: ids.astype(np.int64)}
  for name in teacher_columns():
    col = spec.column(name)
    if name == columns.CLICK_TS:
      cols[name] = (ids % (26 * 86400)).astype(np.int64)
    elif name == columns.SNAPSHOT_TS:
      cols[name] = np.full(n, 40 * 86400, np.int64)
    elif col.dtype == 'int':
      cols[name] = rng.integers(0, 5, n).astype(np.int64)
    else:
      cols[name] = rng.random(n).astype(np.float32)
  return cols


def write_files(directory, n: int, seed: int = 0):
  """`n` examples in files of SHARD records; returns their paths."""
  rng = np.random.default_rng(seed)
  paths = []
  for k in range(0, n, SHARD):
    cols = example_columns(np.arange(k, min(n, k + SHARD)), rng)
    paths.append(os.path.join(str(directory), f'part-{k // SHARD:05d}.gz'))
    with tf.io.TFRecordWriter(paths[-1], options='GZIP') as w:
      for record in codec.encode(cols):
        w.write(record)
  return paths


# The child: the teacher's training input (lag filter, shuffle, repeat) over
# `files` for `steps` batches; prints its peak RSS. `module`: the data module.
PROBE = r'''
import importlib.util, json, resource, sys
args = json.loads(sys.argv[1])
import tensorflow as tf
from models import training
from world import synthetic
if args['module']:
  spec_ = importlib.util.spec_from_file_location('probe_data', args['module'])
  data = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(data)
else:
  from models import data
training.set_seed(0)
ds = data.raw_dataset(args['files'], args['names'], args['batch'], synthetic.spec(),
                      keep=data.lag_filter(64), seed=0,
                      shuffle_buffer=args['buffer'])
n = 0
for batch in ds.take(args['steps']):
  n += int(batch['click_ts'].shape[0])
print(json.dumps({'examples': n,
                  'max_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def peak_rss_mb(files, steps: int, module: str = '') -> float:
  """The probe's peak RSS (MB) in a fresh process."""
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3',
             TF_USE_LEGACY_KERAS='1')
  args = json.dumps({'files': files, 'names': teacher_columns(), 'batch': BATCH,
                     'buffer': BUFFER, 'steps': steps, 'module': module})
  out = subprocess.run([sys.executable, '-c', PROBE, args], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=True, timeout=300)
  got = json.loads(out.stdout.strip().splitlines()[-1])
  assert got['examples'] == steps * BATCH
  return got['max_rss_mb']


def test_training_peak_memory_does_not_grow_with_the_examples(tmp_path):
  files = write_files(tmp_path, 2 * N)
  # Every example of the larger window passes through, then some.
  steps = -(-2 * N // BATCH) + 8
  small = peak_rss_mb(files[:len(files) // 2], steps)
  large = peak_rss_mb(files, steps)
  print(f'peak RSS: {small:.0f} MB at {N} examples, {large:.0f} MB at {2 * N}')
  assert large <= RATIO * small + SLACK_MB, (small, large)


# --- The same examples and seed train the same model ---------------------------


def shard_files(directory, cols: dict, order: np.ndarray, per_shard: int):
  """The ExampleGen's writer over the examples delivered in `order`."""
  records = codec.encode({k: v[order] for k, v in cols.items()})
  keys = executor.order_keys(cols[columns.CLICK_ID][order])
  with beam.Pipeline() as p:
    _ = (p | beam.Create(list(zip(keys.tolist(), records)), reshuffle=True)
         | executor.WriteShards(str(directory), per_shard))
  return sorted(os.path.join(str(directory), f) for f in os.listdir(str(directory)))


def train(files, seed: int) -> list:
  """A small network on the training input of `files`, seeded as run_fn seeds."""
  training.set_seed(seed)
  spec = synthetic.spec()
  names = teacher_columns()
  numeric = [c.name for c in spec.teacher_features() if c.dtype == 'float']
  ds = data.raw_dataset(files, names, 64, spec, keep=data.lag_filter(64),
                        seed=seed, shuffle_buffer=256, read_parallelism=2)
  ds = ds.map(lambda b: (tf.concat([b[n] for n in numeric], 1),
                         tf.cast(b[columns.labels(spec.window_names())[0]],
                                 tf.float32)))
  model = tf.keras.Sequential([tf.keras.layers.Dense(8, activation='relu'),
                               tf.keras.layers.Dropout(0.2),
                               tf.keras.layers.Dense(1)])
  model.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss='mse')
  model.run_eagerly = True  # the same kernels; tracing fit costs more here
  model.fit(ds, steps_per_epoch=40, epochs=1, verbose=0)  # ~3 epochs of 900
  return model.get_weights()


@pytest.mark.usefixtures('restore_op_determinism')
def test_same_examples_and_seed_train_the_same_model(tmp_path):
  n = 900
  rng = np.random.default_rng(7)
  cols = example_columns(rng.permutation(100_000)[:n], rng)
  # Two ExampleGen runs of the same window: the runner delivers the examples
  # in different orders; the files are the same, byte for byte.
  first = shard_files(tmp_path / 'a', cols, np.arange(n), per_shard=200)
  second = shard_files(tmp_path / 'b', cols, rng.permutation(n), per_shard=200)
  assert [os.path.basename(f) for f in first] == [
      f'data_tfrecord-{k:05d}-of-00005.gz' for k in range(5)]
  for a, b in zip(first, second):
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
      assert fa.read() == fb.read()
  weights = train(first, seed=3)
  again = train(second, seed=3)
  assert all(np.array_equal(a, b) for a, b in zip(weights, again))
  # Not vacuous: another seed (file order, shuffle, initialisation) trains another.
  other = train(first, seed=4)
  assert not all(np.array_equal(a, b) for a, b in zip(weights, other))


def test_example_gen_shards_each_span_the_window_in_an_order_unrelated_to_time(
    tmp_path):
  """Day-sorted input (as the join delivered it) comes out as shards that each
  hold every day, with a bounded stretch of each already mixing the days."""
  n = 6000
  ids = np.arange(n)  # ids grow with time, as the logs' do
  cols = {columns.CLICK_ID: ids.astype(np.int64),
          columns.CLICK_TS: (ids * (20 * 86400 // n)).astype(np.int64)}
  files = shard_files(tmp_path, cols, np.arange(n), per_shard=2000)
  assert len(files) == 3
  total = 0
  for f in files:
    ts = np.concatenate([codec.decode(list(r.numpy()))[columns.CLICK_TS]
                         for r in tf.data.TFRecordDataset(f, 'GZIP').batch(1000)])
    total += len(ts)
    days = ts // 86400
    assert len(np.unique(days[:300])) == 20  # any 300 records span the 20 days
    assert abs(np.corrcoef(np.arange(len(ts)), ts)[0, 1]) < 0.1
  assert total == n


def test_training_length_from_the_data():
  from config import NetConfig  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  net = NetConfig(batch_size=512, epochs=14.0, max_steps=20_000)
  # The default world's ~74k training clicks: about the 2,000 steps of before.
  assert training.steps_from_data(net, 74_172) == 2029
  assert training.steps_from_data(net, 10_000_000) == 20_000  # the budget
  assert training.steps_from_data(net, 10) == 1
  fn_args = types.SimpleNamespace(train_steps=None, eval_steps=None)
  got = training.resolve_steps(fn_args, net, lambda: 74_172)
  assert fn_args.train_steps == 2029 and fn_args.eval_steps == 101
  assert got['steps_from'] == 'epochs' and got['examples_seen'] == 2029 * 512
  assert got['training_examples'] == 74_172
  # An explicit train_steps wins, and nothing is counted.
  fn_args = types.SimpleNamespace(train_steps=37, eval_steps=None)
  got = training.resolve_steps(fn_args, net, lambda: 1 / 0)
  assert fn_args.train_steps == 37 and got['steps_from'] == 'train_steps'
  fn_args = types.SimpleNamespace(train_steps=None, eval_steps=None)
  assert training.resolve_steps(fn_args, net, lambda: 10**7)['steps_from'] == 'max_steps'


def test_count_records(tmp_path):
  files = write_files(tmp_path, 2 * SHARD + 17)
  assert data.count_records(files) == 2 * SHARD + 17
