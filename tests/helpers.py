"""Test helpers: small generated worlds and the shared end-to-end run."""

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from tfx.types import standard_artifacts

from components import artifacts
from observation import labels
from world import synthetic

import config as config_lib
from components.example_gen import executor as example_gen_executor
from pipeline import console
from pipeline import local
from pipeline import report
from world import generator


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module_json(module: str):
  """Runs `python -m module` in a fresh process (e.g. one that must set logical
  devices before TensorFlow starts) and returns the JSON of its last line."""
  out = subprocess.run([sys.executable, '-m', module], cwd=ROOT, check=True,
                       capture_output=True, text=True,
                       env={**os.environ, 'TF_USE_LEGACY_KERAS': '1'})
  return json.loads(out.stdout.strip().splitlines()[-1])


def label_spec(**overrides) -> labels.LabelSpec:
  """A LabelSpec of the synthetic world's columns with its prior as the delay
  model (delay source prior), the browsers' default observed fractions."""
  fields = dict(
      windows=synthetic.WINDOWS, prior_shares=(0.55, 0.25, 0.20),
      prior_scales=(8.0, 48.0, 480.0), observed_fractions=(1.0, 0.9, 0.3, 0.6, 0.2),
      segment=synthetic.BROWSER, first_party=synthetic.ADVERTISER_FIRST_PARTY,
      tcpa=synthetic.TARGET_CPA, panel=synthetic.IN_PANEL, delay_source='prior')
  fields.update(overrides)
  return labels.LabelSpec(**fields)


def labels_as_of(clicks, conversion_click_id, conversion_ts, snapshot_ts, spec):
  """observation.labels.labels_as_of with the spec's prior as the delay model."""
  return labels.labels_as_of(clicks, conversion_click_id, conversion_ts,
                             snapshot_ts, spec, labels.prior_delay(spec))


def make_world(root, overrides=()):
  """Generates a world under `root` and returns (config, path)."""
  cfg = config_lib.load_config(None, list(overrides))
  path = os.path.join(str(root), 'world')
  generator.generate(cfg, path, log=lambda *_: None)
  return cfg, path


def run_example_gen(cfg, data_root, out, window_days=3, **props):
  """Runs the ConversionLogExampleGen executor (T by data_end, E = 1 day);
  returns its Examples artifact (its DelayModel artifact is at `out`-delay)."""
  examples = standard_artifacts.Examples()
  examples.uri = str(out)
  delay = artifacts.DelayModel()
  delay.uri = str(out) + '-delay'
  executor = example_gen_executor
  params = {executor.DATA_ROOT_KEY: str(data_root),
            executor.WINDOW_DAYS_KEY: window_days, executor.EVAL_DAYS_KEY: 1,
            executor.SNAPSHOT_TIME_KEY: '', executor.SNAPSHOT_POLICY_KEY: 'data_end',
            executor.DATASET_KEY: cfg.dataset_json(),
            executor.LABEL_SPEC_KEY: cfg.label_spec().to_json(), **props}
  executor.Executor().Do({}, {executor.EXAMPLES_KEY: [examples],
                              executor.DELAY_MODEL_KEY: [delay]}, params)
  return examples


# --- The shared end-to-end run (docs/architecture.md §11) -----------------
# One tiny world, one pipeline root.

E2E_OVERRIDES = [
    'world.num_clicks=38000', 'world.days=25', 'world.seed=11',
    # A measurement panel, so the panel label mode and recipes run end to end.
    'world.panel_share=0.05',
    # Four eval days (about 6k clicks): enough for the promotion's default rule
    # to resolve what the KD night gains (bench/promotion_bench.py); the lag is
    # E + 16 h, as in default.yaml.
    'window.days=14', 'window.eval_days=4', 'window.teacher_lag_hours=112',
    'model.teacher.train_steps=400', 'model.teacher.batch_size=256',
    'model.student.train_steps=300', 'model.student.batch_size=256',
    'quantizer.latency_samples=200',
    'model.student_warm_start=true',
    'beam.direct_running_mode=in_memory',
]


class E2ERun:
  """Finished local runs (nights) of one pipeline: config, paths, ML Metadata.

  `artifact` and `outputs` read `default_night` unless told a night: the nights
  differ in T, so "the latest execution" of different nodes may be of different
  nights (a skipped night runs only its first two nodes).
  """

  def __init__(self, cfg, world, default_night=None, base_overrides=None):
    self.cfg = cfg
    self.world = world
    # What each night's config is loaded from (the spec file is read again, so
    # a night sees an edit of it).
    self.base_overrides = list(E2E_OVERRIDES if base_overrides is None
                               else base_overrides)
    self.paths = local.LocalPaths.from_config(cfg)
    self.nights = {}  # name -> {node: execution id}
    self.states = {}  # name -> {node: execution state}
    self.serving = {}  # name -> {relative path: bytes} after that night
    self.summaries = {}  # name -> the run summary's text (what the CLI prints)
    self.configs = {}  # name -> the night's config
    self.consoles = {}  # name -> the component lines the CLI prints
    self.default_night = default_night

  def night(self, name, snapshot_time, bootstrap=False, overrides=(), force=False):
    """Runs the DAG for one night and records its executions."""
    cfg = config_lib.load_config(None, self.base_overrides + [
        f'paths.data_root={self.cfg.paths.data_root}',
        f'paths.output_root={self.cfg.paths.output_root}',
        f'paths.serving_dir={self.cfg.paths.serving_dir}'] + list(overrides))
    out = io.StringIO()
    # The CLI's console hooks, without its log redirection (pytest captures).
    with console.session(self.paths.root, out=out, redirect=False):
      local.run(cfg, snapshot_time=snapshot_time, bootstrap=bootstrap, force=force)
    self.consoles[name] = out.getvalue()
    executions = self.executions()
    self.nights[name] = {e['node']: e['execution_id'] for e in executions}
    self.states[name] = {e['node']: e['state'] for e in executions}
    self.serving[name] = serving_listing(self.paths.serving_dir)
    self.summaries[name] = report.text(report.summarize(cfg, name))
    self.configs[name] = cfg

  def killed_night(self, name, snapshot_time, node, timeout=600):
    """Runs a night with the CLI in a process of its own and SIGKILLs it (and its
    Beam workers) once `node` is executing; records what it left behind."""
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
      f.write(self.cfg.to_json())
    command = [sys.executable, '-m', 'pipeline.cli', 'run', '--config', f.name,
               '--snapshot-time', snapshot_time]
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, 'TF_USE_LEGACY_KERAS': '1'})
    before = {e['execution_id'] for e in self.executions()}
    deadline = time.time() + timeout
    try:
      while not self._running(node, before):
        if proc.poll() is not None or time.time() > deadline:
          raise AssertionError(f'{name}: {node} never ran (exit {proc.poll()})')
        time.sleep(0.5)
    finally:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
      os.unlink(f.name)
    executions = self.executions()
    self.nights[name] = {e['node']: e['execution_id'] for e in executions}
    self.states[name] = {e['node']: e['state'] for e in executions}
    self.serving[name] = serving_listing(self.paths.serving_dir)

  def _running(self, node, before):
    """Whether a new execution of `node` (not in `before`) has started (read
    between the writer's transactions; a locked store reads as not started)."""
    try:
      return any(e['node'] == node and e['execution_id'] not in before
                 for e in self.executions())
    except (sqlite3.Error, RuntimeError):
      return False
    except Exception as e:  # pylint: disable=broad-except
      # ML Metadata wraps SQLite's "database is locked" in its own errors.
      if 'locked' in str(e) or 'busy' in str(e).lower():
        return False
      raise

  def outputs(self, node_id, night=None):
    night = night or self.default_night
    execution = self.nights[night][node_id] if night else None
    return local.node_outputs(self.paths.metadata, self.cfg.pipeline_name, node_id,
                              execution)

  def artifact(self, node_id, key, night=None):
    (artifact,) = self.outputs(node_id, night)[key]
    return artifact

  def executions(self):
    return local.node_executions(self.paths.metadata, self.cfg.pipeline_name)


def serving_listing(base):
  """Every file under the serving directory with its bytes."""
  out = {}
  for root, _, files in os.walk(base):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, base)] = f.read()
  return out


def tfma_tflite_predictions(model_dir: str, file_pattern: str, key_column: str,
                            label_key: str, dump: str) -> dict:
  """{key: prediction} of the TFLite model at <model_dir>/tflite on the
  tf.Examples at `file_pattern`, through TFMA's own extractors (how the
  Evaluator feeds it: inputs by feature name, -1 for a missing one)."""
  # Imported here: only the tests that run TFMA pay for it.
  import pickle  # pylint: disable=g-import-not-at-top
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  from tfx_bsl.tfxio import tf_example_record  # pylint: disable=g-import-not-at-top
  eval_config = tfma.EvalConfig(model_specs=[tfma.ModelSpec(
      model_type=tfma.TF_LITE, label_key=label_key)])
  shared = tfma.default_eval_shared_model(eval_saved_model_path=model_dir,
                                          eval_config=eval_config)
  extractors = tfma.default_extractors(eval_shared_model=shared,
                                       eval_config=eval_config)

  def save(pairs):
    with open(dump, 'wb') as f:
      pickle.dump(pairs, f)

  source = tf_example_record.TFExampleRecord(
      file_pattern=file_pattern, raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
  with beam.Pipeline() as p:
    extracts = p | source.BeamSource(batch_size=256) | tfma.BatchedInputsToExtracts()
    for extractor in extractors:
      extracts = extracts | extractor.stage_name >> extractor.ptransform
    _ = (extracts
         | beam.FlatMap(lambda e: zip(
             np.asarray(e[tfma.FEATURES_KEY][key_column]).reshape(-1).tolist(),
             np.asarray(e[tfma.PREDICTIONS_KEY]).reshape(-1).tolist()))
         | beam.combiners.ToList() | beam.Map(save))
  with open(dump, 'rb') as f:
    return dict(pickle.load(f))


def true_relative_change(cfg, candidate_uri: str, baseline_uri: str,
                         clicks: int = 20_000) -> float:
  """A candidate's expected Poisson NLL against a baseline's, relative to the
  baseline's, on fresh clicks of the synthetic world `cfg` generates (never
  logged; y ~ Poisson(true rate)): the truth the promotion's decision is
  judged by. The expected NLL is the Bayes floor plus the closed-form excess
  risk (models/nll.py); the floor's E[log y!] is a Monte Carlo mean."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from components.quantizer import convert  # pylint: disable=g-import-not-at-top
  from components.served_baseline import executor as served_baseline  # pylint: disable=g-import-not-at-top
  from models import nll  # pylint: disable=g-import-not-at-top
  world = generator.World(cfg)
  day = int(cfg.world.start().timestamp()) + (cfg.world.days - 1) * 86400
  rows = world.scoring_clicks(clicks, day, stream=21)
  rate = sum(rows[c].astype(np.float64) for c in synthetic.TRUE_RATES)
  y = np.random.default_rng(0).poisson(rate, (16, rate.size))
  floor = float(nll.poisson_nll_per_example(y, np.broadcast_to(rate, y.shape)).mean())

  def excess(uri):
    with open(served_baseline.tflite_path(uri), 'rb') as f:
      return nll.excess_risk(rate, convert.predict(f.read(), rows))
  base = excess(baseline_uri)
  return (excess(candidate_uri) - base) / (floor + base)


def run_quantizer(cfg, student_uri, examples, out_root, mode='int8', **params):
  """Runs the Quantizer's executor (components/quantizer/executor.py) with the
  config's quantizer settings on a student Model artifact's uri and an Examples
  artifact; returns (the quantized Model artifact, the report dict).
  `params` override exec properties by key (e.g. max_nll_increase)."""
  from tfx.types import standard_artifacts as std  # pylint: disable=g-import-not-at-top,reimported
  from components.quantizer import executor as q  # pylint: disable=g-import-not-at-top
  student = std.Model()
  student.uri = str(student_uri)
  out, rep = std.Model(), artifacts.QuantizationReport()
  out.uri, rep.uri = f'{out_root}/model', f'{out_root}/report'
  props = {q.MODE_KEY: mode,
           q.CALIBRATION_EXAMPLES_KEY: cfg.quantizer.calibration_examples,
           q.CALIBRATION_SAMPLING_KEY: cfg.quantizer.calibration_sampling,
           q.MAX_NLL_INCREASE_KEY: cfg.quantizer.max_nll_increase,
           q.LATENCY_SAMPLES_KEY: 20,
           q.EVAL_LABEL_KEY: cfg.eval_label_spec().to_json(),
           q.SEED_KEY: cfg.model.seed, **params}
  q.Executor().Do({q.MODEL_KEY: [student], q.EXAMPLES_KEY: [examples]},
                  {q.QUANTIZED_KEY: [out], q.REPORT_KEY: [rep]}, props)
  with open(os.path.join(rep.uri, q.REPORT_FILE)) as f:
    return out, json.load(f)
