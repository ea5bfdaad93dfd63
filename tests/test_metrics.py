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


def test_gauc_equals_impression_weighted_sklearn_auc_skipping_one_class_users():
  r = np.random.default_rng(3)
  users = r.integers(0, 40, 2000)
  labels = (r.random(2000) < 0.3 + 0.01 * (users % 7)).astype(np.float32)
  labels[users == 5] = 1.0   # one class only: skipped
  labels[users == 6] = 0.0
  scores = r.normal(size=2000) + labels * 0.5
  num, den = 0.0, 0
  for u in np.unique(users):
    m = users == u
    if 0 < labels[m].sum() < m.sum():
      num += m.sum() * roc_auc_score(labels[m], scores[m])
      den += m.sum()
  np.testing.assert_allclose(metrics.gauc(labels, scores, users), num / den, rtol=1e-12)
  assert np.isnan(metrics.gauc([1, 1, 0], [0.1, 0.2, 0.3], [0, 0, 1]))


def test_tail_mask_picks_the_least_frequent_fifth_of_items():
  train = np.repeat(np.arange(1, 11), np.arange(1, 11))  # item i seen i times
  ids = np.array([1, 2, 3, 10, 11, 1])                     # 11: never seen in training
  # 11 distinct items; the tail is the round(0.2 * 11) = 2 rarest: 11 (count 0) and 1 (count 1).
  np.testing.assert_array_equal(metrics.tail_mask(train, ids, 0.2),
                                [True, False, False, False, True, True])
  with pytest.raises(ValueError, match='tail fraction'):
    metrics.tail_mask(train, ids, 1.5)


def test_relaimpr():
  assert metrics.relaimpr(0.75, 0.7) == pytest.approx(25.0)
