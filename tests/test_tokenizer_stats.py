"""genrec/tokenizer_stats.py: the paper's tokenizer diagnostics and evaluation slices on hand cases."""
import numpy as np

from deres_jax.genrec import metrics
from deres_jax.genrec import tokenizer_stats


def test_diagnostics_on_a_hand_catalogue():
  codes = np.array([[0, 1, -1], [0, 1, -1], [0, 2, 3], [1, 2, -1]])
  d = tokenizer_stats.diagnostics(codes, codebook_size=4, x=np.array([[1, 0], [1, 1], [0, 1], [5, 5.0]]))
  assert d['collision_rate'] == 0.5                        # items 0 and 1 share (0, 1)
  np.testing.assert_allclose(d['utilisation_per_level'], [2 / 4, 2 / 4, 1 / 4])
  assert d['length_hist'] == [0, 0, 3, 1] and d['mean_length'] == 2.25
  # Gini against the mean-absolute-difference formula G = sum_ij |a_i - a_j| / (2 K^2 mean a).
  for counts in ([3, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 7]):
    a = np.asarray(counts, float)
    want = np.abs(a[:, None] - a[None]).sum() / (2 * len(a) ** 2 * a.mean())
    assert abs(tokenizer_stats.gini(a) - want) < 1e-12
  # Intra-code similarity: pairs sharing first code 0 are (0,1), (0,2), (1,2): cos 1/sqrt2, 0, 1/sqrt2.
  assert abs(d['intra_code_similarity'] - (2 / np.sqrt(2)) / 3) < 1e-12


def test_cold_and_popularity_slices_partition_the_users():
  count = np.array([0, 10, 1, 4, 5, 7, 2, 30, 0, 6])    # items 1..9
  s = tokenizer_stats.slices(count)
  np.testing.assert_array_equal(np.flatnonzero(s['cold']), [2, 3, 6, 8])
  thirds = s['pop_head'] | s['pop_torso'] | s['pop_tail']
  assert thirds[1:].all() and not thirds[0] and s['pop_head'].sum() == 3
  np.testing.assert_array_equal(np.flatnonzero(s['pop_head']), [1, 5, 7])
  target = np.array([1, 2, 7, 8])
  out = metrics.evaluate(np.array([0, 20, 3, 0]), target, metrics.tail_items(count), slices=s)
  assert out['cold/users'] == 2 and out['cold/recall@10'] == 0.5      # items 2 (miss) and 8 (hit)
  assert out['pop_head/users'] == 2 and out['pop_head/recall@10'] == 1.0
