"""Exact AUC and logloss against scikit-learn."""
import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from deres_jax.train import metrics


@pytest.mark.parametrize('seed', range(3))
def test_auc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 2, 5000)
  s = np.round(rng.normal(size=5000) + y * 0.7, 1)  # rounding creates many ties
  assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_extremes_and_degenerate():
  y = np.array([0, 0, 1, 1])
  assert metrics.auc(y, [0.1, 0.2, 0.3, 0.4]) == 1.0
  assert metrics.auc(y, [0.4, 0.3, 0.2, 0.1]) == 0.0
  assert metrics.auc(y, [0.5] * 4) == 0.5
  assert np.isnan(metrics.auc([1, 1], [0.2, 0.3]))


def test_logloss_matches_sklearn():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 1000)
  z = rng.normal(size=1000) * 3
  p = 1 / (1 + np.exp(-z))
  assert metrics.logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)
  assert metrics.logloss_from_logits(y, z) == pytest.approx(log_loss(y, p), rel=1e-9)
