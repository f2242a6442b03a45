"""Backtests: a pushed version's eval clicks take tonight's matured labels."""

import numpy as np

from pipeline import backtest
from schemas import columns
from world import synthetic


def test_eval_clicks_take_tonights_labels_by_click_id():
  label, exposure = synthetic.LABELS[0], synthetic.EXPOSURES[0]
  at_push = {columns.CLICK_ID: np.array([30, 10, 20]), 'feature': np.array([3, 1, 2]),
             label: np.array([0, 0, 1]), exposure: np.array([0.2, 0.5, 0.4])}
  tonight = {columns.CLICK_ID: np.array([20, 50, 10]), 'feature': np.array([9, 9, 9]),
             label: np.array([2, 7, 1]), exposure: np.array([0.9, 0.1, 1.0])}
  found, matured = backtest._aligned(at_push, tonight, synthetic.WINDOW_NAMES)  # pylint: disable=protected-access
  assert found.tolist() == [False, True, True]
  assert matured[columns.CLICK_ID].tolist() == [10, 20]
  # The model's inputs as served; the labels and exposures as of tonight.
  assert matured['feature'].tolist() == [1, 2]
  assert matured[label].tolist() == [1, 2]
  assert matured[exposure].tolist() == [1.0, 0.9]
  found, matured = backtest._aligned(at_push, {columns.CLICK_ID: np.array([])},
                                     synthetic.WINDOW_NAMES)  # pylint: disable=protected-access
  assert not found.any() and matured is None
