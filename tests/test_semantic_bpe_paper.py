"""genrec/semantic_bpe.py against the paper's SemanticBPE (research/capsid.md §9.2)."""
import numpy as np
import pytest

from deres_jax.genrec import semantic_bpe


def _corpus(n=200, vocab=6, seed=0):
  rng = np.random.default_rng(seed)
  return [list(rng.integers(0, vocab, size=rng.integers(1, 7))) for _ in range(n)]


def _reference_frequency_bpe(seqs, first_new, num_merges):
  """Textbook BPE, written independently: count pairs, merge the most frequent (smallest on ties)."""
  seqs, pairs = [list(s) for s in seqs], []
  for m in range(num_merges):
    counts = {}
    for s in seqs:
      for p in zip(s, s[1:]):
        counts[p] = counts.get(p, 0) + 1
    counts = {p: c for p, c in counts.items() if c >= 2}
    if not counts:
      break
    top = max(counts.values())
    best = min(p for p, c in counts.items() if c == top)
    pairs.append(best)
    new_seqs = []
    for s in seqs:
      out, i = [], 0
      while i < len(s):
        if tuple(s[i:i + 2]) == best:
          out.append(first_new + m)
          i += 2
        else:
          out.append(s[i])
          i += 1
      new_seqs.append(out)
    seqs = new_seqs
  return pairs


def test_merge_score_on_a_hand_corpus():
  # (0,1) x4, cos 0.6;  (2,3) x2, cos 1.0;  (4,5) x4, cos 0.0 (under any threshold).
  seqs = [[0, 1]] * 4 + [[2, 3]] * 2 + [[4, 5]] * 4
  emb = np.array([[1, 0], [0.6, 0.8], [0, 1], [0, 2], [1, 0], [0, 1]], float)
  m = semantic_bpe.learn(seqs, 6, 1, emb, alpha=0.6, theta_start=0.5, theta_end=0.5)
  # score(0,1) = 0.6 * 4/4 + 0.4 * 0.6 = 0.84 > score(2,3) = 0.6 * 2/4 + 0.4 * 1.0 = 0.70; (4,5) is no candidate.
  assert tuple(m.pairs[0]) == (0, 1)
  np.testing.assert_allclose([m.freq_hat[0], m.cos[0], m.score[0]], [1.0, 0.6, 0.84], rtol=1e-12)
  # alpha = 0.2 weights the cosine more: 0.2 * 0.5 + 0.8 = 0.9 beats 0.2 + 0.48 = 0.68.
  m = semantic_bpe.learn(seqs, 6, 1, emb, alpha=0.2, theta_start=0.5, theta_end=0.5)
  assert tuple(m.pairs[0]) == (2, 3) and abs(m.score[0] - 0.9) < 1e-12
  assert semantic_bpe.merge_score(0.5, 1.0, 0.6) == pytest.approx(0.7)
  # The threshold is annealed linearly 0.90 -> 0.55 over the merges.
  assert semantic_bpe.threshold(0, 8) == 0.90 and semantic_bpe.threshold(7, 8) == pytest.approx(0.55)


def test_pairs_under_the_cosine_threshold_are_never_merged():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(8, 3))
  seqs = [list(rng.integers(0, 8, size=rng.integers(2, 6))) for _ in range(400)]
  m = semantic_bpe.learn(seqs, 8, 30, emb, alpha=0.6)
  assert len(m.pairs)
  for i, c in enumerate(m.cos):
    assert c > semantic_bpe.threshold(i, 30)       # every merge passed its own threshold
  # A corpus whose only pairs are below 0.55 learns nothing; frequency-only BPE (alpha = 1) has no threshold.
  opp = np.array([[1.0, 0], [-1.0, 0]])
  assert len(semantic_bpe.learn([[0, 1]] * 5, 2, 3, opp).pairs) == 0
  assert len(semantic_bpe.learn([[0, 1]] * 5, 2, 3, None, alpha=1.0).pairs) == 1
  with pytest.raises(ValueError, match='needs token embeddings'):
    semantic_bpe.learn([[0, 1]] * 5, 2, 3, None, alpha=0.6)


def test_frequency_only_is_textbook_bpe_and_round_trip_holds_in_both_orders():
  seqs = _corpus(seed=2)
  m = semantic_bpe.learn(seqs, 6, 10, alpha=1.0)
  assert [tuple(p) for p in m.pairs] == _reference_frequency_bpe(seqs, 6, 10)
  for order in ('left', 'rank'):
    for s in seqs + _corpus(50, seed=1):   # also sequences the merges were not learned on
      enc = semantic_bpe.encode(s, m, order)
      assert semantic_bpe.decode(enc, m) == list(s) and len(enc) <= len(s)
  with pytest.raises(ValueError, match='neither a base token'):
    semantic_bpe.decode([99], m)


def _catalogue(seed=3, n=400):
  """IDs of 3-4 tokens over per-level vocabularies: levels share prefixes like a semantic-ID tree."""
  rng = np.random.default_rng(seed)
  first = rng.integers(0, 6, n)
  second = 6 + (first * 2 + rng.integers(0, 3, n)) % 12
  third = 18 + rng.integers(0, 12, n)
  fourth = 30 + rng.integers(0, 6, n)
  keep4 = rng.random(n) < 0.5
  return [[a, b, c, d] if k else [a, b, c] for a, b, c, d, k in zip(first, second, third, fourth, keep4)]


def test_merged_catalogue_keeps_prefix_sharing_and_stays_injective():
  ids = [list(x) for x in {tuple(s) for s in _catalogue()}]
  emb = np.random.default_rng(0).normal(size=(36, 4))
  emb[6:18] = emb[:6].repeat(2, 0) + 0.1 * emb[6:18]      # a level-2 code resembles its parent
  m = semantic_bpe.learn(ids, 36, 40, emb, alpha=0.6, theta_start=0.9, theta_end=-1.0)
  base_first = len({s[0] for s in ids})
  firsts = {order: len({semantic_bpe.encode(s, m, order)[0] for s in ids}) for order in ('left', 'rank')}
  print(f'distinct first tokens: base {base_first}, merged left {firsts["left"]}, rank {firsts["rank"]}')
  assert firsts['left'] <= firsts['rank']
  # keep_prefix=1: the first level is never merged, so the trie's first level is exactly the base one.
  k1 = semantic_bpe.learn(ids, 36, 40, emb, alpha=0.6, theta_start=0.9, theta_end=-1.0, keep_prefix=1)
  enc1 = [semantic_bpe.encode(s, k1) for s in ids]
  assert len({e[0] for e in enc1}) == base_first and all(e[0] == s[0] for e, s in zip(enc1, ids))
  assert all(semantic_bpe.decode(e, k1) == s for e, s in zip(enc1, ids))
  assert sum(map(len, enc1)) < sum(map(len, ids))          # it still shortens the IDs
  for order in ('left', 'rank'):
    enc = [tuple(semantic_bpe.encode(s, m, order)) for s in ids]
    assert len(set(enc)) == len(ids)                         # still one string per item
  table = np.zeros((len(ids) + 1, 4), np.int32)
  for i, s in enumerate(ids):
    table[i + 1, :len(s)] = np.asarray(s) + 1               # 0 = padding in a token table
  merged = semantic_bpe.encode_table(table, semantic_bpe.learn([r[r > 0] for r in table[1:]], 37, 20, alpha=1.0))
  assert merged.shape[1] <= 4 and np.all(merged[0] == 0)


def test_gates_train_their_biases_only_and_are_hard_at_inference():
  seqs = _corpus(seed=4)
  emb = np.random.default_rng(1).normal(size=(6, 3))
  m = semantic_bpe.learn(seqs, 6, 12, emb, alpha=0.6, theta_end=-1.0)
  frozen = {k: np.array(getattr(m, k), copy=True) for k in ('pairs', 'freq_hat', 'cos', 'score')}
  gated, bias = semantic_bpe.fit_gates(m, steps=20, init_bias=-0.2, warmup_steps=5)
  for k, v in frozen.items():                                # the merge model is bit-identical
    assert np.array_equal(getattr(m, k), v) and np.array_equal(getattr(gated, k), v)
  assert not np.allclose(bias, -0.2)                         # the biases did train (u_m > 0: they open)
  np.testing.assert_array_equal(gated.active, bias > 0)      # hard gate at inference
  # A closed gate removes its merge from encoding.
  closed = semantic_bpe.Merges(6, m.pairs, active=np.zeros(len(m.pairs), bool))
  assert all(semantic_bpe.encode(s, closed) == list(s) for s in seqs)
