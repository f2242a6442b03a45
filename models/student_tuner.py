"""The Tuner's tuner_fn: a sweep over the kd student's hyperparameters.

KerasTuner's `Tuner` builds Keras 3 models and refuses tf_keras ones (its check
is in `Tuner._try_build`), and this project stays on tf_keras. TFX's Tuner
executor needs only a `BaseTuner` with an oracle (tfx/components/tuner/
executor.py: search, get_best_hyperparameters, oracle.get_best_trials), so
StudentTuner is a BaseTuner whose `run_trial` trains the student with its own
training code (models/student_trainer.train) and returns the tune split's score.

Trials are selected on the tune split (the Tuner's eval split) by the observed-
count likelihood per window with exposure offsets (models/hparams.tune_nll),
never on the training objective: that one falls with alpha (the soft term is
easier than the counts) and with overfitting. Each trial also reports its final
training loss, so the tuner results show both.
"""

import copy
import json
import os
from typing import Any, Callable, Dict

import keras_tuner as kt
from absl import logging
from keras_tuner.engine import base_tuner
import tensorflow as tf
from tfx import v1 as tfx

import config as config_lib
from models import hparams
from models import student_trainer

OBJECTIVE = 'tune_nll'
TRAIN_LOSS = 'train_loss'
# Beside the Tuner's output: every trial's values and scores.
TRIALS_FILE = 'trials.json'

TrialFn = Callable[[config_lib.Config, Any], Dict[str, float]]


def search_space(sweep: config_lib.SweepConfig) -> kt.HyperParameters:
  """One Choice per searched dimension (config sweep.<name>: its values)."""
  hp = kt.HyperParameters()
  for name, values in sweep.space().items():
    hp.Choice(name, values, ordered=True)
  return hp


def oracle(sweep: config_lib.SweepConfig) -> kt.Oracle:
  """random (seeded) or grid over the search space, minimising OBJECTIVE."""
  objective = kt.Objective(OBJECTIVE, direction='min')
  if sweep.algorithm == 'grid':
    return kt.oracles.GridSearchOracle(
        objective=objective, max_trials=sweep.trials,
        hyperparameters=search_space(sweep), seed=sweep.seed)
  return kt.oracles.RandomSearchOracle(
      objective=objective, max_trials=sweep.trials,
      hyperparameters=search_space(sweep), seed=sweep.seed)


def student_trial(cfg: config_lib.Config, fn_args) -> Dict[str, float]:
  """Trains the student as configured (the trial's values applied) on the
  train split and scores it on the tune split (fn_args.eval_files)."""
  trained = student_trainer.train(cfg, fn_args)
  score = student_trainer.tune_score(cfg, trained.network, trained.tft_layer,
                                     fn_args.eval_files, trained.schema_path)
  return {OBJECTIVE: score['nll'],
          TRAIN_LOSS: float(trained.history.history['loss'][-1]),
          'tune_examples': float(score['examples']),
          'panel': 1.0 if score['mode'] == hparams.SCORE_PANEL else 0.0}


class StudentTuner(base_tuner.BaseTuner):
  """A BaseTuner whose trials are the student's own training runs."""

  def __init__(self, cfg: config_lib.Config, fn_args, trial_fn: TrialFn = student_trial,
               **kwargs):
    super().__init__(oracle=oracle(cfg.sweep), hypermodel=None, **kwargs)
    self._cfg, self._fn_args, self._trial_fn = cfg, fn_args, trial_fn
    self.trials = []  # {'trial_id', values, metrics} in run order

  def run_trial(self, trial, *args, **kwargs):
    del args, kwargs
    values = dict(trial.hyperparameters.values)
    cfg = hparams.apply(self._cfg, values)
    fn_args = copy.copy(self._fn_args)
    # A searched (or set) train_steps; unset, the trial derives them from the
    # data as the student does (student_trainer.train).
    fn_args.train_steps = cfg.model.student.train_steps
    fn_args.eval_steps = (max(1, fn_args.train_steps // 20)
                          if fn_args.train_steps else None)
    # Each trial builds its own graph; the last trial's need not stay in memory.
    tf.keras.backend.clear_session()
    metrics = self._trial_fn(cfg, fn_args)
    logging.info('tuner: trial %s %s -> %s', trial.trial_id, values, metrics)
    self.trials.append({'trial_id': trial.trial_id, **values, **metrics})
    return metrics

  def on_search_end(self):
    super().on_search_end()
    with tf.io.gfile.GFile(os.path.join(self.project_dir, TRIALS_FILE), 'w') as f:
      f.write(json.dumps(self.trials, sort_keys=True))


def tuner_fn(fn_args) -> tfx.components.TunerFnResult:
  """TFX Tuner entry point (Tuner id `tuner`; train split: train, eval: tune)."""
  cfg = config_lib.from_trainer_custom_config(fn_args.custom_config)
  if cfg.distill.recipe != 'kd':
    raise config_lib.ConfigError(
        f'distill.recipe: {cfg.distill.recipe!r}; a sweep tunes the kd recipe')
  tuner = StudentTuner(cfg, fn_args, directory=fn_args.working_dir,
                       project_name='student_sweep', overwrite=True)
  return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})

