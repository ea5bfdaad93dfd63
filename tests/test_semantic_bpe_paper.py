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


def _reference_annealed(seqs, first_new, num_merges, emb, rounds, alpha=0.6, start=0.9, end=0.55):
  """Round by round, written independently: every round (with or without a merge) lowers theta."""
  seqs, emb, out = [list(s) for s in seqs], [np.asarray(e, float) for e in emb], []
  for r in range(10 * rounds + num_merges):
    theta = start + (end - start) * min(r, rounds - 1) / max(rounds - 1, 1)
    counts = {}
    for s in seqs:
      for p in zip(s, s[1:]):
        counts[p] = counts.get(p, 0) + 1
    counts = {p: c for p, c in counts.items() if c >= 2}
    cos = lambda p: emb[p[0]] @ emb[p[1]] / (np.linalg.norm(emb[p[0]]) * np.linalg.norm(emb[p[1]]))
    cands = [p for p in counts if cos(p) > theta]
    if len(out) == num_merges or not counts or (not cands and r >= rounds - 1):
      break
    if not cands:
      continue
    top = max(counts.values())
    best = max(cands, key=lambda p: (alpha * counts[p] / top + (1 - alpha) * cos(p), (-p[0], -p[1])))
    out.append((best, theta))
    emb.append(emb[best[0]] + emb[best[1]])
    seqs = [semantic_bpe._merge_one(s, best, first_new + len(out) - 1) for s in seqs]
  return out


def test_threshold_anneals_over_rounds_instead_of_stopping():
  # (0,1): cos 0.95, 2 items;  (2,3): cos 0.70, 10 items.  Rounds R = 3: theta 0.90, 0.725, 0.55.
  emb = np.array([[1, 0], [0.95, np.sqrt(1 - 0.95 ** 2)], [1, 0], [0.7, np.sqrt(1 - 0.49)]])
  seqs = [[0, 1]] * 2 + [[2, 3]] * 10
  m = semantic_bpe.learn(seqs, 4, 5, emb, theta_rounds=3)
  # Round 0 (0.90): only (0,1) passes, although (2,3) is 5x as frequent. Round 1 (0.725): nothing passes,
  # the round is empty. Round 2 (0.55): (2,3) passes: merged in a later round, not dropped.
  assert [tuple(p) for p in m.pairs] == [(0, 1), (2, 3)]
  np.testing.assert_allclose(m.theta, [0.90, 0.55])
  assert semantic_bpe.threshold(1, 3) == pytest.approx(0.725) and semantic_bpe.threshold(9, 3) == pytest.approx(0.55)
  # Nothing passes 0.90 at the first round (the Beauty situation): learning goes on, it does not stop.
  m = semantic_bpe.learn([[2, 3]] * 10, 4, 5, emb, theta_rounds=3)
  assert [tuple(p) for p in m.pairs] == [(2, 3)] and m.theta[0] == pytest.approx(0.55)
  # The skip over empty rounds equals the round-by-round anneal, on a random corpus.
  rng = np.random.default_rng(5)
  emb = rng.normal(size=(8, 3))
  seqs = [list(rng.integers(0, 8, size=rng.integers(2, 6))) for _ in range(300)]
  for rounds in (4, 20, 60):
    m = semantic_bpe.learn(seqs, 8, 25, emb, theta_rounds=rounds)
    ref = _reference_annealed(seqs, 8, 25, emb, rounds)
    assert [tuple(p) for p in m.pairs] == [p for p, _ in ref] and len(ref) > 0
    np.testing.assert_allclose(m.theta, [t for _, t in ref])
    assert np.all(m.cos > m.theta) and np.all(np.diff(m.theta) <= 1e-12)   # theta only goes down


def test_item_mean_embeddings_and_a_residual_tokenizer():
  # e_t = mean of the unit item vectors over the items holding t (Eq. S3).
  v = np.array([[3.0, 0], [0, 2], [1, 1]])
  e = semantic_bpe.item_mean_embeddings([[0, 1], [0, 2], [1, 1]], v, 4)
  np.testing.assert_allclose(e, [[0.5, 0.5], [np.sqrt(.5) / 2 + .5, np.sqrt(.5) / 2], [0, 1], [0, 0]])
  # A two-level residual tokenizer: parents at angles, children = +-offsets around each parent. The
  # child's code vector (the residual centre) is orthogonal or opposite to the parent's, so 'centre'
  # merges nothing; the items holding a child lie at its parent: 'item_mean' cos ~ 1, it merges.
  rng = np.random.default_rng(0)
  parent = rng.integers(0, 4, 400)
  child = rng.integers(0, 2, 400)
  ang = parent * np.pi / 2 + (child - 0.5) * 0.3
  items = np.stack([np.cos(ang), np.sin(ang)], 1)
  seqs = [[int(p), 4 + 2 * int(p) + int(c)] for p, c in zip(parent, child)]   # child codes 4..11
  centres = np.zeros((12, 2))
  centres[:4] = [[np.cos(a), np.sin(a)] for a in np.arange(4) * np.pi / 2]
  for p in range(4):
    normal = np.array([-np.sin(p * np.pi / 2), np.cos(p * np.pi / 2)])
    centres[4 + 2 * p] = -0.15 * normal - 0.01 * centres[p]     # residuals: +-orthogonal, slightly inward
    centres[5 + 2 * p] = 0.15 * normal - 0.01 * centres[p]
  assert len(semantic_bpe.learn(seqs, 12, 8, centres).pairs) == 0
  m = semantic_bpe.learn(seqs, 12, 8, item_vectors=items)
  assert len(m.pairs) == 8 and np.all(m.cos > 0.95)
  assert {tuple(p) for p in m.pairs} == {(p, 4 + 2 * p + c) for p in range(4) for c in range(2)}
  for s in seqs:                                          # one token per item, the round trip holds
    assert len(semantic_bpe.encode(s, m)) == 1 and semantic_bpe.decode(semantic_bpe.encode(s, m), m) == s
  with pytest.raises(ValueError, match='not both'):
    semantic_bpe.learn(seqs, 12, 8, centres, item_vectors=items)
  with pytest.raises(ValueError, match='rows for'):
    semantic_bpe.learn(seqs, 12, 8, item_vectors=items[:5])


def test_item_mean_of_a_merged_token_is_recomputed_and_left_order_keeps_prefixes():
  ids = [list(x) for x in {tuple(s) for s in _catalogue(seed=4)}]
  rng = np.random.default_rng(1)
  vecs = rng.normal(size=(len(ids), 4)) + 3 * np.eye(4)[[s[0] % 4 for s in ids]]   # items cluster by first token
  m = semantic_bpe.learn(ids, 36, 40, theta_start=0.9, theta_end=-1.0, item_vectors=vecs)
  assert len(m.pairs) > 0 and np.all(m.cos > m.theta)
  # A merge with a merged operand records the cosine of that token's own item mean (Eq. S3: the items
  # holding it right after its merge), not the sum of its parts' vectors; base tokens: the base IDs.
  i = next(j for j, p in enumerate(m.pairs) if p.max() >= 36)
  unit, snap = vecs / np.linalg.norm(vecs, axis=1, keepdims=True), [[list(s) for s in ids]]
  for j in range(i):
    snap.append([semantic_bpe._merge_one(s, tuple(m.pairs[j]), 36 + j) for s in snap[-1]])
  held = lambda t: snap[0 if t < 36 else t - 36 + 1]
  ea, eb = (unit[[k for k, s in enumerate(held(t)) if t in s]].mean(0) for t in m.pairs[i])
  assert m.cos[i] == pytest.approx(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb))
  firsts = {order: len({semantic_bpe.encode(s, m, order)[0] for s in ids}) for order in ('left', 'rank')}
  assert firsts['left'] <= firsts['rank']
  assert len({tuple(semantic_bpe.encode(s, m)) for s in ids}) == len(ids)    # still one string per item
