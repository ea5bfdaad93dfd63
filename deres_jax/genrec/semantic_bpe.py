"""SemanticBPE: merges of adjacent semantic-ID tokens inside one item's ID (CAPSID, arXiv 2605.05096).

The paper's definitions (research/capsid.md §9.2):
  score(a, b) = alpha * freq_hat(a, b) + (1 - alpha) * cos(e_a, e_b),   alpha = 0.6           (Eq. S1)
  candidates: adjacent pairs inside one item's ID with cos(e_a, e_b) > theta, theta annealed 0.90 -> 0.55
  gate: a Gumbel-softmax merge gate in training, a hard one at inference.
Our reading of what the paper leaves open:
  * learning is greedy BPE (Sennrich et al. 2016) in merge rounds r = 0, 1, ...: round r takes the
    best-scoring candidate under
      theta_r = theta_start + (theta_end - theta_start) * min(r, R - 1) / (R - 1)          (Eq. S2)
    (R = `theta_rounds`, default the number of merges asked; after round R - 1 theta stays at
    theta_end). A round with no candidate above theta_r merges nothing and the next round's
    threshold is lower: the threshold anneals instead of ending the learning (learning ends
    when M merges are learned or no pair passes theta_end). freq_hat = the pair's (weighted)
    count / the largest count among the pairs present; ties: the smallest (a, b). alpha = 1 and
    theta = -1 is plain frequency BPE (the frequency-only ablation).
  * e_t, the token vectors (`embedding` in tasks.bpe_stage; the write-ups only say "cos(e_a, e_b)"
    and the abstract "embedding compatibility", neither defines e):
      'item_mean' (default): e_t = mean of the unit item vectors z_i / |z_i| over the items i whose ID
        holds t (a merged token: the items whose ID holds it after the merges so far)        (Eq. S3)
        with z_i the tokenizer's own item representation (CAPSID: r_0). It exists at merge-learning
        time (stage 1) and measures what the abstract calls compatibility: the items carrying b lie
        where the items carrying a lie. The paper's thresholds (0.90 -> 0.55) are reachable with it.
      'centre': e_t = the capsule centre squash(b_lk) of token t (a merged token: the sum of its
        parts). Adjacent centres of a residual tokenizer point apart (layer l+1 quantises what
        layer l left): on Beauty their median cosine is -0.83 and 0.013 % of pairs pass 0.55, so
        almost nothing merges (results/capsid_tokenizer_beauty.md).
  * the merge model is frozen after learning (the pairs and their scores); each merge m has a
    gate with a scalar bias beta_m. Training: the binary Gumbel-softmax (logistic noise) gate
    pi_m = sigmoid((beta_m + g1 - g2) / t); inference: the merge is used iff beta_m > 0.
    BPE term (the only loss that reaches the biases here; the paper's generator loss does not):
      L_b = -mean_m pi_m * u_m,  u_m = alpha_t freq_hat_m + (1 - alpha_t)(cos_m - theta_end)
    with a frequency warm-up alpha_t = 1 -> alpha over `warmup_steps`. Every learned merge has
    u_m > 0 (freq_hat > 0, cos_m > theta_m >= theta_end), so the term keeps all gates open:
    the gates only matter once a generator loss reaches them.
  * encoding order ('left', the default): left-to-right longest match over the active merges
    (each merged token stands for a fixed base string, decode expands it back). An item's first
    token then depends only on the longest merged string its ID starts with, so items sharing a
    base prefix mostly share their first merged token too and the retriever's trie keeps its
    shared prefixes; 'rank' (GPT-2's order: the lowest-rank pair anywhere first) can merge a
    later pair first and split items that share a prefix (tests/test_semantic_bpe_paper.py
    counts the distinct first tokens under both).
Merges never cross item boundaries: the retriever emits one item's ID on its own.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax


@dataclasses.dataclass
class Merges:
  """Learned merges: merged token first_new + i = pairs[i]; freq_hat, cos, score, theta as when it was learned."""
  first_new: int            # id of the first merged token (the base vocabulary size)
  pairs: np.ndarray         # [M, 2] int64, in the order learned
  freq_hat: np.ndarray = None   # [M] normalised frequency at learning time
  cos: np.ndarray = None        # [M] cos(e_a, e_b) (1 when there are no embeddings)
  score: np.ndarray = None      # [M] alpha * freq_hat + (1 - alpha) * cos
  active: np.ndarray = None     # [M] bool, the hard gates (None = all active)
  keep_prefix: int = 0          # leading tokens of every ID that are never merged
  theta: np.ndarray = None      # [M] the threshold theta_r of the round that learned it (nan: not recorded)

  def __post_init__(self):
    m = len(self.pairs)
    self.pairs = np.asarray(self.pairs, np.int64).reshape(-1, 2)
    for name in ('freq_hat', 'cos', 'score'):
      if getattr(self, name) is None:
        setattr(self, name, np.ones(m))
    if self.theta is None:
      self.theta = np.full(m, np.nan)
    if self.active is None:
      self.active = np.ones(m, bool)

  @property
  def vocab_size(self) -> int:
    return self.first_new + len(self.pairs)


def threshold(r: int, rounds: int, start: float = 0.90, end: float = 0.55) -> float:
  """theta_r of merge round r (Eq. S2): linear from `start` (r = 0) to `end` (r = rounds - 1), then `end`."""
  return start + (end - start) * min(r, rounds - 1) / max(rounds - 1, 1)


def merge_score(freq_hat, cos, alpha: float = 0.6):
  """alpha * freq_hat + (1 - alpha) * cos (the paper's merge score)."""
  return alpha * np.asarray(freq_hat) + (1 - alpha) * np.asarray(cos)


def _pair_counts(seqs, weights, keep: int = 0) -> dict:
  counts = {}
  for s, w in zip(seqs, weights):
    for a, b in zip(s[keep:-1], s[keep + 1:]):
      counts[(a, b)] = counts.get((a, b), 0.0) + w
  return counts


def _merge_one(s: list, pair: tuple, new: int, keep: int = 0) -> list:
  out, i = list(s[:keep]), keep
  while i < len(s):
    if i + 1 < len(s) and s[i] == pair[0] and s[i + 1] == pair[1]:
      out.append(new)
      i += 2
    else:
      out.append(s[i])
      i += 1
  return out


def _cos(a, b) -> float:
  return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def item_mean_embeddings(seqs, item_vectors, num_tokens: int) -> np.ndarray:
  """e_t [num_tokens, D] = mean of the unit item vectors over the items whose ID holds t (Eq. S3; 0 if none)."""
  v = _unit(item_vectors)
  rows = [(t, i) for i, s in enumerate(seqs) for t in set(map(int, s))]
  tok, item = (np.asarray(a, np.int64) for a in zip(*rows)) if rows else (np.zeros(0, np.int64),) * 2
  total = np.zeros((num_tokens, v.shape[1]))
  np.add.at(total, tok, v[item])
  return total / np.maximum(np.bincount(tok, minlength=num_tokens), 1)[:, None]


def _unit(v) -> np.ndarray:
  v = np.asarray(v, np.float64)
  return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def learn(seqs, first_new: int, num_merges: int, embeddings=None, alpha: float = 0.6, theta_start: float = 0.90,
          theta_end: float = 0.55, weights=None, min_count: float = 2.0, keep_prefix: int = 0,
          theta_rounds: int = None, item_vectors=None) -> Merges:
  """Learns up to `num_merges` merges over token sequences (lists of ints < first_new), in merge rounds.

  Args:
    seqs: the corpus, one token list per item (merges never cross two items).
    first_new: id given to the first merged token.
    num_merges: M, the most merges to learn.
    embeddings: [first_new, D] fixed token vectors ('centre'; a merged token's: the sum of its parts).
    alpha: weight of the normalised frequency in the score (1 = frequency-only BPE).
    theta_start, theta_end: the cosine threshold, annealed linearly over `theta_rounds` rounds (Eq. S2).
    weights: per-sequence counts (None = 1 each).
    min_count: a pair must occur this often (weighted) to be a candidate.
    keep_prefix: the first this many tokens of every ID are never merged (0: the paper; 1 keeps
      the trie's first level exactly).
    theta_rounds: R, the rounds over which theta anneals (None: num_merges). A round without a
      candidate merges nothing; theta then stays at theta_end until M merges or no candidate.
    item_vectors: [len(seqs), D] item representations ('item_mean', Eq. S3: e_t is the mean unit
      vector of the items holding t, recomputed for every merged token); excludes `embeddings`.
  Returns:
    Merges (with each merge's freq_hat, cos, score and theta).
  """
  if embeddings is not None and item_vectors is not None:
    raise ValueError('give token `embeddings` (centre) or `item_vectors` (item_mean), not both.')
  if alpha < 1 and embeddings is None and item_vectors is None:
    raise ValueError(f'SemanticBPE with alpha={alpha} < 1 needs token embeddings for cos(e_a, e_b).')
  seqs = [list(map(int, s)) for s in seqs]
  if any(t >= first_new or t < 0 for s in seqs for t in s):
    raise ValueError(f'base tokens must lie in [0, {first_new}); merged ids start at {first_new}.')
  weights = np.ones(len(seqs)) if weights is None else np.asarray(weights, np.float64)
  if item_vectors is not None:
    if len(item_vectors) != len(seqs):
      raise ValueError(f'item_vectors has {len(item_vectors)} rows for {len(seqs)} sequences.')
    vecs = _unit(item_vectors)
    embeddings = item_mean_embeddings(seqs, vecs, first_new)
  emb = None if embeddings is None else [np.asarray(e, np.float64) for e in embeddings]
  rounds = max(int(num_merges if theta_rounds is None else theta_rounds), 1)
  pairs, fh, cs, sc, th, r, cos_cache = [], [], [], [], [], 0, {}
  all_counts = _pair_counts(seqs, weights, keep_prefix)   # kept up to date as merges change sequences
  while len(pairs) < num_merges:
    counts = {p: c for p, c in all_counts.items() if c >= min_count}
    if not counts:
      break
    top = max(counts.values())
    for p in counts:   # a token's vector never changes once made: each pair's cosine is computed once
      if p not in cos_cache:
        cos_cache[p] = 1.0 if emb is None else _cos(emb[p[0]], emb[p[1]])
    cos = {p: cos_cache[p] for p in counts}
    theta = threshold(r, rounds, theta_start, theta_end)
    if emb is not None and max(cos.values()) <= theta:
      # No candidate this round (Eq. S2): the threshold anneals. Empty rounds change nothing else, so go
      # straight to the first round whose threshold the best cosine passes; none left: learning ends.
      r = next((q for q in range(r + 1, rounds) if max(cos.values()) > threshold(q, rounds, theta_start,
                                                                                 theta_end)), None)
      if r is None:
        break
      continue
    cands = {p: (c / top, cos[p], float(merge_score(c / top, cos[p], alpha))) for p, c in counts.items()
             if emb is None or cos[p] > theta}                  # only pairs above the threshold
    best = min(cands, key=lambda p: (-cands[p][2], p))
    new = first_new + len(pairs)
    pairs.append(best)
    for lst, val in zip((fh, cs, sc), cands[best]):
      lst.append(val)
    th.append(theta if emb is not None else -np.inf)
    held = []                      # the items whose ID now holds the merged token
    for i, s in enumerate(seqs):
      if best[0] in s and best[1] in s:
        merged = _merge_one(s, best, new, keep_prefix)
        if len(merged) < len(s):
          for sign, t in ((-1, s), (1, merged)):
            for p, c in _pair_counts([t], weights[i:i + 1], keep_prefix).items():
              all_counts[p] = all_counts.get(p, 0.0) + sign * c
          seqs[i] = merged
          held.append(i)
    all_counts = {p: c for p, c in all_counts.items() if c > 1e-9}
    if item_vectors is not None:   # Eq. S3 for the merged token
      emb.append(vecs[held].mean(0) if held else np.zeros(vecs.shape[1]))
    elif emb is not None:
      emb.append(emb[best[0]] + emb[best[1]])  # 'centre': a merged token's vector is the sum of its parts
    r += 1
  return Merges(first_new, np.asarray(pairs, np.int64).reshape(-1, 2), np.asarray(fh), np.asarray(cs),
                np.asarray(sc), keep_prefix=keep_prefix, theta=np.asarray(th, np.float64))


def expansions(merges: Merges) -> list:
  """The base-token string of every merged token [M] (tuples)."""
  out = []
  for a, b in merges.pairs:
    part = lambda t: out[t - merges.first_new] if t >= merges.first_new else (int(t),)
    out.append(part(a) + part(b))
  return out


def _encode_rank(s: list, merges: Merges) -> list:
  head, s = s[:merges.keep_prefix], s[merges.keep_prefix:]
  rank = {tuple(map(int, p)): i for i, p in enumerate(merges.pairs) if merges.active[i]}
  while len(s) > 1:
    cands = [(rank[(a, b)], i) for i, (a, b) in enumerate(zip(s[:-1], s[1:])) if (a, b) in rank]
    if not cands:
      break
    r = min(cands)[0]
    s = _merge_one(s, tuple(int(t) for t in merges.pairs[r]), merges.first_new + r)
  return head + s


def encode(seq, merges: Merges, order: str = 'left', _exp=None) -> list:
  """Applies the active merges to one base-token list ('left': longest match from the left; 'rank')."""
  s = list(map(int, seq))
  if order == 'rank':
    return _encode_rank(s, merges)
  if order != 'left':
    raise ValueError(f"order must be 'left' or 'rank', got {order!r}.")
  exp = _exp if _exp is not None else {e: merges.first_new + i for i, e in enumerate(expansions(merges))
                                       if merges.active[i]}
  longest = max((len(e) for e in exp), default=1)
  out, i = s[:merges.keep_prefix], merges.keep_prefix
  while i < len(s):
    for n in range(min(longest, len(s) - i), 1, -1):       # the longest merged string starting at i
      tok = exp.get(tuple(s[i:i + n]))
      if tok is not None:
        out.append(tok)
        i += n
        break
    else:
      out.append(s[i])
      i += 1
  return out


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


def encode_table(item_tok: np.ndarray, merges: Merges, order: str = 'left') -> np.ndarray:
  """Item token table [N+1, T] (0 = padding after the ID) -> merged table [N+1, T'] (T' <= T)."""
  exp = {e: merges.first_new + i for i, e in enumerate(expansions(merges)) if merges.active[i]}
  rows = [encode(r[r > 0], merges, order, exp) for r in item_tok]
  out = np.zeros((len(rows), max(1, max(len(r) for r in rows))), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


# ----------------------------------------------------------------------------- merge gates
def gate_probs(bias_m, rng, temperature: float, train: bool):
  """Binary Gumbel-softmax gate sigmoid((beta + g1 - g2) / t) in training; 1[beta > 0] at inference."""
  if not train:
    return (bias_m > 0).astype(jnp.float32)
  noise = jax.random.logistic(rng, bias_m.shape)       # g1 - g2 of two Gumbels is logistic
  return jax.nn.sigmoid((bias_m + noise) / temperature)


def bpe_term(bias_m, merges: Merges, rng, step, alpha: float, theta_end: float, warmup_steps: int,
             temperature: float):
  """L_b = -mean_m pi_m u_m with the frequency warm-up (module docstring)."""
  alpha_t = 1.0 + (alpha - 1.0) * jnp.minimum(1.0, step / max(warmup_steps, 1))
  u = alpha_t * jnp.asarray(merges.freq_hat) + (1 - alpha_t) * (jnp.asarray(merges.cos) - theta_end)
  return -(gate_probs(bias_m, rng, temperature, True) * u).mean()


def fit_gates(merges: Merges, steps: int, alpha: float = 0.6, theta_end: float = 0.55, warmup_steps: int = 50,
              temperature: float = 0.5, init_bias: float = 1.0, learning_rate: float = 0.05, seed: int = 0):
  """Trains only the gates' biases (the merge model stays frozen); returns (Merges with hard gates, biases)."""
  bias = jnp.full((len(merges.pairs),), init_bias, jnp.float32)
  if len(merges.pairs) and steps:
    tx = optax.adam(learning_rate)
    state = tx.init(bias)
    grad = jax.jit(jax.grad(lambda b, r, t: bpe_term(b, merges, r, t, alpha, theta_end, warmup_steps,
                                                     temperature)))
    for t, rng in enumerate(jax.random.split(jax.random.PRNGKey(seed), steps)):
      updates, state = tx.update(grad(bias, rng, jnp.float32(t)), state)
      bias = optax.apply_updates(bias, updates)
  gated = dataclasses.replace(merges, active=np.asarray(gate_probs(bias, None, temperature, False)) > 0)
  return gated, np.asarray(bias)
