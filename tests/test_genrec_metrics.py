"""genrec/metrics.py: Recall/NDCG against a direct computation, head/tail split."""
import numpy as np

from deres_jax.genrec import metrics


def _direct(scores, target, k):
  """Sort every row, find the target's position, apply the textbook definitions."""
  recall, ndcg = [], []
  for s, t in zip(scores, target):
    order = [i for i in np.argsort(-s, kind='stable') if i != 0]  # item 0 is padding
    # Ties: the target goes first among equal scores.
    pos = sum(1 for i in order if s[i] > s[t])
    top = order[:k] if pos >= k else order
    del top
    recall.append(float(pos < k))
    ndcg.append(1.0 / np.log2(pos + 2) if pos < k else 0.0)
  return np.mean(recall), np.mean(ndcg)


def test_recall_ndcg_match_a_direct_computation():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(300, 41)).round(1)  # rounding makes ties
  target = rng.integers(1, 41, 300)
  ranks = metrics.ranks_from_scores(scores, target)
  out = metrics.recall_ndcg(ranks, ks=(1, 5, 10))
  for k in (1, 5, 10):
    r, n = _direct(scores, target, k)
    np.testing.assert_allclose(out[f'recall@{k}'], r)
    np.testing.assert_allclose(out[f'ndcg@{k}'], n)
  # Hand example: ranks 0, 1 and 11 -> Recall@10 = 2/3, NDCG@10 = (1 + 1/log2(3)) / 3.
  got = metrics.recall_ndcg(np.array([0, 1, 11]))
  np.testing.assert_allclose(got['recall@10'], 2 / 3)
  np.testing.assert_allclose(got['ndcg@10'], (1 + 1 / np.log2(3)) / 3)


def test_ranked_lists_agree_with_scores():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(50, 31))
  target = rng.integers(1, 31, 50)
  top = np.argsort(-scores[:, 1:], axis=1)[:, :10] + 1
  from_lists = metrics.recall_ndcg(metrics.ranks_from_lists(top, target))
  from_scores = metrics.recall_ndcg(metrics.ranks_from_scores(scores, target))
  for k, v in from_scores.items():
    np.testing.assert_allclose(from_lists[k], v)


def test_tail_is_the_least_popular_fifth():
  rng = np.random.default_rng(2)
  count = np.concatenate([[0], rng.poisson(3, 100)])
  tail = metrics.tail_items(count)
  assert tail.sum() == 20 and not tail[0]
  assert count[tail].max() <= count[1:][~tail[1:]].min()
  target = rng.integers(1, 101, 400)
  out = metrics.evaluate(np.zeros(400), target, tail)
  assert out['tail/users'] + out['head/users'] == 400
  assert out['tail/users'] == tail[target].sum() and out['tail/recall@5'] == 1.0


def test_popularity_ranks_equal_full_scoring_with_ties_broken_by_lower_id():
  """metrics.popularity_ranks (a position lookup) against ranking every item by score: counts
  with ties, the tie broken towards the lower id (a unique score count * (N+1) + N - id)."""
  rng = np.random.default_rng(0)
  count = np.concatenate([[0], rng.integers(0, 5, 40)])   # many ties
  target = rng.integers(1, 41, 200)
  n = len(count)
  unique = count * (n + 1) + (n - np.arange(n))
  scores = np.broadcast_to(unique.astype(np.float64), (len(target), n))
  np.testing.assert_array_equal(metrics.popularity_ranks(count, target), metrics.ranks_from_scores(scores, target))
  # the most popular item (lowest id among the top count) has rank 0
  top = np.flatnonzero(count[1:] == count[1:].max())[0] + 1
  assert metrics.popularity_ranks(count, np.array([top]))[0] == 0
