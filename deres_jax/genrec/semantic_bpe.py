"""SemanticBPE: byte-pair merges over semantic-ID token sequences (CAPSID, arXiv 2605.05096).

The abstract: SemanticBPE "composes adjacent SID tokens into reusable subwords by combining their
co-occurrence with their embedding compatibility". Reconstruction (research/capsid.md §1a.6):
  score(a, b) = log count(a, b) + lambda * cos(e_a, e_b)
over adjacent pairs (a, b) inside item IDs, where count is the number of occurrences in the
corpus and e_t is a token's embedding (the capsule / codeword vector; a merged token's
embedding is the sum of its two parts'). Greedy BPE (Sennrich et al. 2016): repeatedly merge
the best-scoring pair (ties: the smallest (a, b)) into a new token id, until `num_merges`
merges are made or no pair occurs at least `min_count` times. With lambda = 0 this is plain
frequency BPE. Encoding applies the merges in the order learned (lowest rank first, leftmost
first), as in GPT-2's BPE; decoding expands each merged token into its two parts recursively,
so decode(encode(s)) = s for every sequence s over the base tokens.

Open choices (config.bpe): lambda, the number of merges, the corpus ('items': each item's ID
once; 'sequences': each item's ID weighted by its count in the training parts, so merges follow
what users interact with). Merges never cross item boundaries here: the retriever must emit
one item's ID on its own (ActionPiece's cross-item merges need context-dependent decoding and
are not built).
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Merges:
  """Learned merges: merged token first_new + i = pairs[i] (two token ids)."""
  first_new: int            # id of the first merged token (the base vocabulary size)
  pairs: np.ndarray         # [M, 2] int64, in the order learned (= encoding priority)

  @property
  def vocab_size(self) -> int:
    return self.first_new + len(self.pairs)


def _pair_counts(seqs, weights) -> dict:
  counts = {}
  for s, w in zip(seqs, weights):
    for a, b in zip(s[:-1], s[1:]):
      counts[(a, b)] = counts.get((a, b), 0.0) + w
  return counts


def _merge_one(s: list, pair: tuple, new: int) -> list:
  out, i = [], 0
  while i < len(s):
    if i + 1 < len(s) and s[i] == pair[0] and s[i + 1] == pair[1]:
      out.append(new)
      i += 2
    else:
      out.append(s[i])
      i += 1
  return out


def learn(seqs, first_new: int, num_merges: int, embeddings=None, lam: float = 0.0, weights=None,
          min_count: float = 2.0) -> Merges:
  """Learns up to `num_merges` merges over token sequences (lists of ints < first_new).

  Args:
    seqs: the corpus, one token list per item.
    first_new: id given to the first merged token.
    num_merges: M, the most merges to learn.
    embeddings: [first_new, D] token embeddings for the compatibility term (None when lam = 0).
    lam: lambda, the weight of cos(e_a, e_b) in the score.
    weights: per-sequence counts (None = 1 each).
    min_count: a pair must occur this often (weighted) to be merged.
  Returns:
    Merges.
  """
  if lam and embeddings is None:
    raise ValueError('SemanticBPE with lambda != 0 needs token embeddings.')
  seqs = [list(map(int, s)) for s in seqs]
  if any(t >= first_new or t < 0 for s in seqs for t in s):
    raise ValueError(f'base tokens must lie in [0, {first_new}); merged ids start at {first_new}.')
  weights = np.ones(len(seqs)) if weights is None else np.asarray(weights, np.float64)
  emb = None if embeddings is None else [np.asarray(e, np.float64) for e in embeddings]
  pairs = []
  for m in range(num_merges):
    counts = {p: c for p, c in _pair_counts(seqs, weights).items() if c >= min_count}
    if not counts:
      break

    def score(p):
      s = np.log(counts[p])
      if lam:
        a, b = emb[p[0]], emb[p[1]]
        s += lam * float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
      return s

    best = min(counts, key=lambda p: (-score(p), p))
    new = first_new + m
    pairs.append(best)
    if emb is not None:
      emb.append(emb[best[0]] + emb[best[1]])  # a merged token's embedding: the sum of its parts
    seqs = [_merge_one(s, best, new) for s in seqs]
  return Merges(first_new, np.asarray(pairs, np.int64).reshape(-1, 2))


def encode(seq, merges: Merges) -> list:
  """Applies the merges to one token list: the lowest-rank pair present first, leftmost first."""
  s = list(map(int, seq))
  rank = {tuple(map(int, p)): i for i, p in enumerate(merges.pairs)}
  while len(s) > 1:
    cands = [(rank[(a, b)], i) for i, (a, b) in enumerate(zip(s[:-1], s[1:])) if (a, b) in rank]
    if not cands:
      break
    r = min(cands)[0]
    s = _merge_one(s, tuple(int(t) for t in merges.pairs[r]), merges.first_new + r)
  return s


def decode(seq, merges: Merges) -> list:
  """Expands merged tokens back into base tokens (the exact inverse of `encode`)."""
  out, stack = [], list(map(int, seq))[::-1]
  while stack:
    t = stack.pop()
    if t >= merges.first_new:
      if t >= merges.vocab_size:
        raise ValueError(f'token {t} is neither a base token nor one of the {len(merges.pairs)} merges.')
      a, b = merges.pairs[t - merges.first_new]
      stack += [int(b), int(a)]
    else:
      out.append(t)
  return out


def encode_table(item_tok: np.ndarray, merges: Merges) -> np.ndarray:
  """Item token table [N+1, T] (0 = padding after the ID) -> merged table [N+1, T'] (T' <= T)."""
  rows = [encode(r[r > 0], merges) for r in item_tok]
  out = np.zeros((len(rows), max(1, max(len(r) for r in rows))), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out
