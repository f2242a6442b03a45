"""Sweeps (issue 15): the tune split's hash, fingerprints, the tune score, the
sweep records and their resolution, and selection on held-out loss."""

import json
import os
import types

import numpy as np
import pytest
from tfx.types import standard_artifacts

from components.example_gen import executor as example_gen_executor
from components.example_gen import window
from components.sweep import executor as sweep
import config as config_lib
from models import hparams
from models import nll
from models import student_tuner
from schemas import columns
from world import synthetic


def test_tune_mask_is_a_stable_nested_share_of_click_ids():
  ids = np.arange(200_000, dtype=np.int64)
  ten = window.tune_mask(ids, 0.1)
  assert abs(ten.mean() - 0.1) < 0.005
  # The same click is in or out on every night (and the result does not
  # depend on which other clicks are in the batch).
  assert np.array_equal(window.tune_mask(ids[::7], 0.1), ten[::7])
  # A smaller share is a subset: lowering the fraction never moves a tuned
  # click into a training set it was kept out of.
  assert not (window.tune_mask(ids, 0.05) & ~ten).any()
  assert not window.tune_mask(ids, 0.0).any()
  assert example_gen_executor.split_names(0.0) == ('train', 'eval')
  assert example_gen_executor.split_names(0.1) == ('train', 'eval', 'tune')


def test_fingerprint_ignores_tuned_values_and_locations_but_not_architecture():
  base = config_lib.load_config(None, ['sweep.tune_fraction=0.1'])
  same = config_lib.load_config(None, [
      'sweep.tune_fraction=0.1', 'distill.alpha=0.9', 'model.student.train_steps=7',
      'model.student.learning_rate=0.01', 'paths.output_root=/elsewhere',
      'window.snapshot_time=2026-02-01T00:00:00Z', 'sweep.trials=3'])
  assert hparams.fingerprint(base) == hparams.fingerprint(same)
  for change in (['model.student.hidden_units=[32,16]'], ['distill.recipe=offset'],
                 ['window.days=21'], ['sweep.tune_fraction=0.2'],
                 ['model.teacher.train_steps=10']):
    other = config_lib.load_config(None, ['sweep.tune_fraction=0.1'] + change)
    assert hparams.fingerprint(other) != hparams.fingerprint(base), change


def test_apply_sets_config_keys_and_checks_ranges():
  cfg = config_lib.load_config(None)
  got = hparams.apply(cfg, {'alpha': 0.7, 'train_steps': 37, 'learning_rate': 0.01})
  assert got.distill.alpha == 0.7 and got.model.student.train_steps == 37
  assert got.model.student.learning_rate == 0.01
  assert cfg.distill.alpha == 0.5  # the original is untouched
  assert hparams.effective(got)['alpha'] == 0.7
  with pytest.raises(config_lib.ConfigError, match='distill.alpha'):
    hparams.apply(cfg, {'alpha': 1.5})
  with pytest.raises(config_lib.ConfigError, match='unknown'):
    hparams.apply(cfg, {'dropout': 0.1})


def test_sweep_config_names_bad_keys():
  with pytest.raises(config_lib.ConfigError, match='sweep.temperature'):
    config_lib.load_config(None, ['sweep.temperature=[0.5,2.0]'])
  with pytest.raises(config_lib.ConfigError, match='sweep.alpha'):
    config_lib.load_config(None, ['sweep.alpha=[0.5,0.5]'])
  with pytest.raises(config_lib.ConfigError, match='sweep.tune_fraction'):
    config_lib.load_config(None, ['sweep.tune_fraction=0.7'])


def test_create_pipeline_refuses_a_sweep_without_a_tune_split(tmp_path):
  from pipeline import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load_config(None)
  with pytest.raises(config_lib.ConfigError, match='sweep.tune_fraction'):
    pipeline_lib.create_pipeline(cfg, pipeline_root=str(tmp_path), data_root='d',
                                 schema_path='s', serving_dir='v', sweep=True)
  swept = pipeline_lib.create_pipeline(
      config_lib.load_config(None, ['sweep.tune_fraction=0.1']),
      pipeline_root=str(tmp_path), data_root='d', schema_path='s', serving_dir='v',
      sweep=True)
  ids = [c.id for c in swept.components]
  assert ids.index('BulkInferrer') < ids.index('tuner') < ids.index('student')
  assert 'SweepLookup' not in ids and 'SweepRecord' in ids
  nightly = pipeline_lib.create_pipeline(
      config_lib.load_config(None, ['sweep.tune_fraction=0.1']),
      pipeline_root=str(tmp_path), data_root='d', schema_path='s', serving_dir='v')
  by_id = {c.id: c for c in nightly.components}
  assert 'tuner' not in by_id
  assert 'hyperparameters' in by_id['student'].inputs
  bulk = json.loads(by_id['BulkInferrer'].exec_properties['data_spec'])
  assert bulk['example_splits'] == ['train', 'eval', 'tune']


def _rows(n, panel):
  rng = np.random.default_rng(0)
  rows = {c: rng.poisson(0.3, n) for c in synthetic.LABELS}
  rows.update({c: np.full(n, 1.0) for c in synthetic.EXPOSURES})
  rows.update({c: np.full(n, 0.5) for c in synthetic.OBSERVED_EXPOSURES})
  rows[hparams.PANEL] = panel
  return rows


def test_tune_nll_uses_exposures_on_the_panel_and_prior_offsets_elsewhere():
  n = 1000
  panel = (np.arange(n) % 4 == 0).astype(np.int64)
  rows = _rows(n, panel)
  rates = np.full((n, len(synthetic.LABELS)), 0.3)
  got = hparams.tune_nll(rates, rows, hparams.SCORE_PANEL, synthetic.WINDOW_NAMES)
  keep = panel == 1
  want = sum(nll.poisson_nll_per_example(rows[c][keep], np.full(keep.sum(), 0.3))
             for c in synthetic.LABELS).mean()
  assert got['examples'] == keep.sum() and got['nll'] == pytest.approx(want)
  prior = hparams.tune_nll(rates, rows, hparams.SCORE_PRIOR, synthetic.WINDOW_NAMES)
  want = sum(nll.poisson_nll_per_example(rows[c], np.full(n, 0.15))
             for c in synthetic.LABELS).mean()
  assert prior['examples'] == n and prior['nll'] == pytest.approx(want)
  assert hparams.score_mode('auto', panel, 100) == hparams.SCORE_PANEL
  assert hparams.score_mode('auto', panel, 10_000) == hparams.SCORE_PRIOR
  assert hparams.score_mode('prior', panel, 1) == hparams.SCORE_PRIOR
  # A dataset without a panel scores on the prior's offsets.
  assert hparams.score_mode('auto', None, 1) == hparams.SCORE_PRIOR


def _hp_artifact(uri, body):
  artifact = standard_artifacts.HyperParameters()
  artifact.uri = str(uri)
  os.makedirs(uri, exist_ok=True)
  with open(os.path.join(uri, sweep.HP_FILE), 'w') as f:
    json.dump(body, f)
  return artifact


def test_record_then_resolve_newest_for_the_fingerprint_else_config(tmp_path):
  sweeps = str(tmp_path / 'sweeps')
  sweep.write_record(sweeps, 'abc', {'alpha': 0.3}, stamp='20260101T000000000000Z')
  # The Tuner's output, recorded by SweepRecord's executor.
  best = _hp_artifact(tmp_path / 'best', {'space': [], 'values': {
      'alpha': 0.9, 'train_steps': 40}})
  record = standard_artifacts.HyperParameters()  # any artifact takes properties
  sweep.RecordExecutor().Do({sweep.BEST_HYPERPARAMETERS_KEY: [best]},
                            {sweep.RECORD_KEY: [record]},
                            {sweep.SWEEPS_DIR_KEY: sweeps, sweep.FINGERPRINT_KEY: 'abc'})

  def resolve(fingerprint):
    out = standard_artifacts.HyperParameters()
    out.uri = str(tmp_path / f'resolved-{fingerprint}')
    sweep.LookupExecutor().Do({}, {sweep.HYPERPARAMETERS_KEY: [out]}, {
        sweep.SWEEPS_DIR_KEY: sweeps, sweep.FINGERPRINT_KEY: fingerprint})
    return out, sweep.read_hp_file(out)

  out, body = resolve('abc')
  assert hparams.values_of(body) == {'alpha': 0.9, 'train_steps': 40}
  assert hparams.provenance_of(body)['source'] == hparams.SOURCE_SWEEP
  assert out.get_string_custom_property(sweep.SOURCE) == hparams.SOURCE_SWEEP
  out, body = resolve('other')
  assert hparams.values_of(body) == {}
  assert hparams.provenance_of(body)['source'] == hparams.SOURCE_CONFIG


# --- Selection on held-out loss: a planted overfitting trial ------------------


def _planted_data(seed=0, levels=60, per_level=8):
  """One categorical feature whose levels all have the same true rate: any
  per-level structure a model learns is noise."""
  rng = np.random.default_rng(seed)
  level = np.repeat(np.arange(levels), per_level)
  return level, rng.poisson(0.4, level.size).astype(np.float64)


def _fit_and_score(cfg, fn_args):
  """A trial: per-level log-rates by gradient descent on the Poisson loss from
  the global mean, `train_steps` steps at `learning_rate`; scored on fresh
  draws (the tune split) and on its own training data."""
  del fn_args
  level, y = _planted_data(0)
  tune_level, tune_y = _planted_data(1)
  log_rate = np.full(level.max() + 1, np.log(y.mean()))
  counts = np.bincount(level, minlength=log_rate.size)
  sums = np.bincount(level, weights=y, minlength=log_rate.size)
  for _ in range(cfg.model.student.train_steps):
    grad = (np.exp(log_rate) * counts - sums) / len(y)
    log_rate -= cfg.model.student.learning_rate * grad * log_rate.size
  train = nll.poisson_nll(y, np.exp(log_rate[level]))
  tune = nll.poisson_nll(tune_y, np.exp(log_rate[tune_level]))
  return {student_tuner.OBJECTIVE: tune, student_tuner.TRAIN_LOSS: train}


def test_a_planted_overfitting_trial_wins_on_training_loss_and_loses_selection(
    tmp_path):
  cfg = config_lib.load_config(None, [
      'sweep.algorithm=grid', 'sweep.trials=3', 'sweep.train_steps=[1,20,3000]',
      'sweep.learning_rate=[0.5]', 'sweep.alpha=[]', 'sweep.temperature=[]',
      'sweep.aux_weight=[]', 'sweep.hint_weight=[]', 'sweep.tcpa_beta=[]'])
  fn_args = types.SimpleNamespace(train_steps=1, eval_steps=1)
  tuner = student_tuner.StudentTuner(cfg, fn_args, trial_fn=_fit_and_score,
                                     directory=str(tmp_path), project_name='p',
                                     overwrite=True)
  tuner.search()
  trials = {t['train_steps']: t for t in tuner.trials}
  assert sorted(trials) == [1, 20, 3000]
  overfit = trials[3000]
  # The planted trial memorises the training noise: the lowest training loss...
  assert overfit[student_tuner.TRAIN_LOSS] == min(
      t[student_tuner.TRAIN_LOSS] for t in trials.values())
  # ...and the worst held-out loss, so the sweep does not pick it.
  best = hparams.values_of(tuner.get_best_hyperparameters()[0].get_config())
  assert best['train_steps'] != 3000
  assert overfit[student_tuner.OBJECTIVE] > trials[best['train_steps']][
      student_tuner.OBJECTIVE]
