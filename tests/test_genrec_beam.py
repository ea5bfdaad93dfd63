"""genrec/beam.py: trie-constrained beam search against brute force on a hand-built model."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.genrec import beam

V, EOS, BOS = 12, 2, 1   # vocabulary; tokens 3..11 are ID tokens
T = 4                    # longest ID (3) + eos


@pytest.fixture(scope='module')
def setup():
  rng = np.random.default_rng(0)
  # Variable-length IDs (2 or 3 tokens), no ID a prefix of another (as with semantic IDs + eos
  # any prefix relation would also be allowed; here we mix both lengths).
  all_ids = [p for n in (2, 3) for p in itertools.product(range(3, V), repeat=n)]
  pick = rng.choice(len(all_ids), 40, replace=False)
  ids = [list(all_ids[i]) for i in pick]
  trie = beam.build_trie(ids, np.arange(1, 41), EOS)
  # Hand-built model: log p(token | previous token, step) from a fixed random table, i.e. a
  # bigram model whose every sequence probability is known in closed form.
  table = jax.nn.log_softmax(jnp.asarray(rng.normal(0, 2, (T, V, V)), jnp.float32), axis=-1)
  return ids, trie, table


def _logprob_fn(table, prefix_bkt, t):
  prev = prefix_bkt[:, :, t - 1] if t > 0 else jnp.full(prefix_bkt.shape[:2], BOS)
  return table[t][prev]


def _brute_force(ids, table):
  scores = []
  for seq in ids:
    prev, s = BOS, 0.0
    for t, tok in enumerate(seq + [EOS]):
      s += float(table[t, prev, tok])
      prev = tok
    scores.append(s)
  return np.asarray(scores)


def test_exhaustive_beam_returns_the_exact_top_k(setup):
  ids, trie, table = setup
  arrays = beam.trie_arrays(trie)
  k = 40  # beam >= number of valid IDs: nothing is pruned, so the answer must be exact
  items, scores, tokens = beam.beam_search(_logprob_fn, arrays, table, 1, k, trie.max_children, trie.max_depth)
  want = _brute_force(ids, table)
  order = np.argsort(-want)
  np.testing.assert_array_equal(np.asarray(items)[0], order + 1)
  np.testing.assert_allclose(np.asarray(scores)[0], want[order], rtol=1e-5, atol=1e-5)
  for item, toks in zip(np.asarray(items)[0], np.asarray(tokens)[0]):
    seq = ids[item - 1]
    np.testing.assert_array_equal(toks[:len(seq) + 1], seq + [EOS])  # tokens spell the ID + eos


def test_narrow_beam_only_returns_valid_ids_with_their_true_scores(setup):
  ids, trie, table = setup
  arrays = beam.trie_arrays(trie)
  items, scores, _ = beam.beam_search(_logprob_fn, arrays, table, 1, 5, trie.max_children, trie.max_depth)
  items, scores = np.asarray(items)[0], np.asarray(scores)[0]
  want = _brute_force(ids, table)
  assert np.all(items > 0) and len(set(items)) == 5          # real, distinct items
  np.testing.assert_allclose(scores, want[items - 1], rtol=1e-5, atol=1e-5)
  assert np.all(np.diff(scores) <= 1e-6)
  # The best sequence is always found when it is greedy-reachable; beam 5 finds the top 1 here.
  assert items[0] == np.argmax(want) + 1


def test_more_beams_than_ids_leave_empty_slots():
  trie = beam.build_trie([[3, 4], [3, 5]], [1, 2], EOS)
  table = jnp.zeros((3, V, V))
  items, scores, _ = beam.beam_search(_logprob_fn, beam.trie_arrays(trie), table, 2, 4, trie.max_children,
                                      trie.max_depth)
  items = np.asarray(items)
  assert sorted(items[0][:2]) == [1, 2] and np.all(items[:, 2:] == 0)
  assert np.all(np.isinf(np.asarray(scores)[:, 2:]))
  with pytest.raises(ValueError, match='same ID'):
    beam.build_trie([[3, 4], [3, 4]], [1, 2], EOS)
