"""genrec/semantic_bpe.py: exact round trip, merge count, the stated score, lambda = 0 is frequency BPE."""
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


def test_encode_decode_round_trip_and_merge_count():
  seqs = _corpus()
  merges = semantic_bpe.learn(seqs, first_new=6, num_merges=12)
  assert len(merges.pairs) == 12 and merges.vocab_size == 18
  for s in seqs + _corpus(50, seed=1):   # also sequences the merges were not learned on
    enc = semantic_bpe.encode(s, merges)
    assert semantic_bpe.decode(enc, merges) == list(s)
    assert len(enc) <= len(s)
  total = lambda m: sum(len(semantic_bpe.encode(s, m)) for s in seqs)
  assert total(merges) < sum(len(s) for s in seqs)            # merges shorten the corpus
  # Merges stop when no pair occurs twice: a tiny corpus cannot reach the asked-for count.
  assert len(semantic_bpe.learn([[0, 1], [0, 1], [2, 3]], 4, num_merges=10).pairs) == 1
  with pytest.raises(ValueError, match='neither a base token'):
    semantic_bpe.decode([99], merges)


def test_lambda_zero_is_plain_frequency_bpe():
  seqs = _corpus(seed=2)
  emb = np.random.default_rng(0).normal(size=(6, 4))
  got = semantic_bpe.learn(seqs, 6, 10, embeddings=emb, lam=0.0)
  assert [tuple(p) for p in got.pairs] == _reference_frequency_bpe(seqs, 6, 10)


def test_merges_follow_the_stated_score():
  # (0,1) occurs 3 times, (2,3) twice; the embeddings make (2,3) compatible and (0,1) opposite.
  seqs = [[0, 1]] * 3 + [[2, 3]] * 2
  emb = np.array([[1.0, 0], [-1.0, 0], [0, 1.0], [0, 1.0]])
  freq = semantic_bpe.learn(seqs, 4, 1, emb, lam=0.0)
  assert tuple(freq.pairs[0]) == (0, 1)                       # log 3 > log 2
  sem = semantic_bpe.learn(seqs, 4, 1, emb, lam=1.0)
  # log 3 + 1 * cos = log 3 - 1 = 0.10  <  log 2 + 1 = 1.69: compatibility wins.
  assert tuple(sem.pairs[0]) == (2, 3)
  # Sequence weights count as occurrences ('sequences' corpus).
  weighted = semantic_bpe.learn(seqs, 4, 1, weights=[1, 1, 1, 5, 5])
  assert tuple(weighted.pairs[0]) == (2, 3)


def test_encode_table_keeps_items_distinct():
  rng = np.random.default_rng(3)
  table = np.zeros((60, 4), np.int32)
  rows = {tuple(rng.integers(3, 9, size=rng.integers(2, 5))) for _ in range(200)}
  for i, r in enumerate(list(rows)[:59]):
    table[i + 1, :len(r)] = r
  merges = semantic_bpe.learn([r[r > 0] for r in table[1:]], 9, 8)
  merged = semantic_bpe.encode_table(table, merges)
  assert merged.shape[1] <= table.shape[1] and np.all(merged[0] == 0)
  strings = {tuple(r[r > 0]) for r in merged[1:]}
  assert len(strings) == len(table) - 1                       # BPE is injective on the item IDs
  for a, b in zip(table[1:], merged[1:]):
    assert semantic_bpe.decode(b[b > 0], merges) == list(a[a > 0])
