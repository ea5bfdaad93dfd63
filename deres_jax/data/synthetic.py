"""Synthetic Criteo-schema data whose true click probability is known (an oracle).

Rows have 13 dense fields (Zipf-distributed counts, some missing) and 26 categorical fields
(Zipf-distributed ids, vocabularies log-spaced from ~10 to ~1e5, some missing). Labels are
Bernoulli(sigmoid(logit)) with

  logit = b + first-order + pairwise + 3-way + 4-way,

  first-order: a weight per categorical value and a slope per (transformed) dense field;
  pairwise:    <u_f[a], u_g[c]> for random field pairs (rank-R factorisation machine terms);
  3-/4-way:    sum_r prod_{f in group} v_f[id_f, r] over random triples / quadruples of
               low-cardinality fields (CP-factored tensors: not expressible by pairwise terms).

Each component is rescaled to a configured standard deviation, and the intercept b is set
so that about `positive_rate` of the rows click. Every row's probability is stored in the
'prob' column, so the Bayes-optimal (oracle) AUC and logloss of each split are known.
Everything is a deterministic function of `seed`.
"""
import dataclasses

import numpy as np

from deres_jax.data.schema import Schema

NUM_DENSE = 13
NUM_CAT = 26


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
  """Knobs of the generator (mirrors `config.data`)."""
  seed: int = 0
  num_train: int = 200_000
  num_val: int = 25_000
  num_test: int = 25_000
  min_vocab: int = 10
  max_vocab: int = 100_000
  zipf_exponent: float = 1.1      # categorical id frequency ~ rank^-s
  positive_rate: float = 0.25
  std_first: float = 1.0          # std of each logit component over the rows
  std_pair: float = 0.8
  std_three: float = 0.7
  std_four: float = 0.6
  num_pairs: int = 16
  num_triples: int = 6
  num_quads: int = 4
  rank: int = 4                   # rank of the pairwise / higher-order factorisations
  half_rank: float = 30.0         # effect size of the id of frequency rank r: 1/sqrt(1 + r/half_rank)


def _rank_scale(perm, vocab, half_rank):
  """Per-id effect size 1/sqrt(1 + rank/half_rank): rare values carry little individual signal."""
  scale = np.zeros(vocab)
  scale[perm] = 1.0 / np.sqrt(1.0 + np.arange(1, vocab) / half_rank)
  return scale


def _zipf_table(rng, vocab, s):
  """(cdf, ids): P(rank r) ~ r^-s over ranks 1..vocab-1, rank r -> id ids[r-1] (a permutation)."""
  cdf = np.cumsum(np.arange(1, vocab, dtype=np.float64) ** -s)
  return cdf / cdf[-1], (rng.permutation(vocab - 1) + 1).astype(np.int32)


class _Truth:
  """The hidden label model: all random parameters drawn once from the seed."""

  def __init__(self, spec: SyntheticSpec):
    rng = np.random.default_rng([spec.seed, 0])
    self.spec = spec
    vocab = np.geomspace(spec.min_vocab, spec.max_vocab, NUM_CAT).round().astype(np.int64)
    self.vocab = tuple(int(v) for v in rng.permutation(vocab))
    self.cat_missing = rng.uniform(0, 0.3, NUM_CAT) * (rng.random(NUM_CAT) < 0.5)
    self.dense_missing = rng.uniform(0, 0.4, NUM_DENSE) * (rng.random(NUM_DENSE) < 0.7)
    self.dense_zipf = rng.uniform(1.4, 2.5, NUM_DENSE)
    self.zipf = [_zipf_table(rng, v, spec.zipf_exponent) for v in self.vocab]
    # Effect sizes shrink with an id's frequency rank, as in real logs where a value seen a
    # handful of times cannot carry a strong individual signal (and could not be learned).
    rs = [_rank_scale(perm, v, spec.half_rank) for (_, perm), v in zip(self.zipf, self.vocab)]
    self.w_cat = [rng.normal(0, 1, v) * r for v, r in zip(self.vocab, rs)]
    for w in self.w_cat:
      w[0] = 0.0  # the missing / OOV id carries no first-order signal
    self.w_dense = rng.normal(0, 1, NUM_DENSE)
    self.w_dense_missing = rng.normal(0, 0.5, NUM_DENSE)
    r = spec.rank
    # Interaction terms only on fields with small vocabularies, whose frequent values are
    # seen often enough for an interaction to be learnable from a few 100k rows.
    small = [f for f in range(NUM_CAT) if self.vocab[f] <= 2000]
    self.pairs = [tuple(rng.choice(small, 2, replace=False)) for _ in range(spec.num_pairs)]
    self.u = [rng.normal(0, 1, (v, r)) * sc[:, None] for v, sc in zip(self.vocab, rs)]
    self.triples = [tuple(rng.choice(small, 3, replace=False)) for _ in range(spec.num_triples)]
    self.quads = [tuple(rng.choice(small, 4, replace=False)) for _ in range(spec.num_quads)]
    self.v = [rng.normal(0, 1, (v, r)) * sc[:, None] for v, sc in zip(self.vocab, rs)]
    # Component scales and intercept, calibrated once on a fixed sample.
    calib = self.sample_features(np.random.default_rng([spec.seed, 99]), 50_000)
    z = np.log1p(np.nan_to_num(calib[0], nan=0.0))
    self.z_mean, self.z_std = z.mean(0), z.std(0) + 1e-6  # fixed per-field standardisation
    parts = self.components(*calib)
    self.scale = {k: (getattr(spec, f'std_{k}') / (parts[k].std() + 1e-12)) for k in parts}
    z = sum(self.scale[k] * parts[k] for k in parts)
    lo, hi = -20.0, 20.0
    for _ in range(60):  # bisection: mean sigmoid(z + b) = positive_rate
      b = (lo + hi) / 2
      lo, hi = (b, hi) if _sigmoid(z + b).mean() < spec.positive_rate else (lo, b)
    self.bias = (lo + hi) / 2

  def sample_features(self, rng, n):
    dense = np.empty((n, NUM_DENSE), np.float32)
    for k in range(NUM_DENSE):
      x = (rng.zipf(self.dense_zipf[k], n) - 1).clip(0, 1e6).astype(np.float32)
      x[rng.random(n) < self.dense_missing[k]] = np.nan
      dense[:, k] = x
    cat = np.empty((n, NUM_CAT), np.int32)
    for f in range(NUM_CAT):
      cdf, perm = self.zipf[f]
      ids = perm[np.minimum(np.searchsorted(cdf, rng.random(n)), len(perm) - 1)]
      ids[rng.random(n) < self.cat_missing[f]] = 0
      cat[:, f] = ids
    return dense, cat

  def components(self, dense, cat):
    missing = np.isnan(dense)
    z = np.log1p(np.where(missing, 0.0, dense))
    z = (z - self.z_mean) / self.z_std  # constants from the calibration sample: a per-row function
    first = (np.where(missing, self.w_dense_missing, z * self.w_dense).sum(1)
             + sum(self.w_cat[f][cat[:, f]] for f in range(NUM_CAT)))
    pair = sum(np.sum(self.u[f][cat[:, f]] * self.u[g][cat[:, g]], 1) for f, g in self.pairs)
    def cp(groups):
      return sum(np.sum(np.prod([self.v[f][cat[:, f]] for f in grp], 0), 1) for grp in groups)
    return {'first': first, 'pair': pair, 'three': cp(self.triples), 'four': cp(self.quads)}

  def logit(self, dense, cat):
    parts = self.components(dense, cat)
    return self.bias + sum(self.scale[k] * parts[k] for k in parts)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def generate(spec: SyntheticSpec):
  """Returns (schema, {'train'|'val'|'test': split}) with a 'prob' column per split."""
  truth = _Truth(spec)
  splits = {}
  for i, (name, n) in enumerate((('train', spec.num_train), ('val', spec.num_val),
                                 ('test', spec.num_test))):
    rng = np.random.default_rng([spec.seed, 1 + i])
    dense, cat = truth.sample_features(rng, n)
    prob = _sigmoid(truth.logit(dense, cat))
    label = (rng.random(n) < prob).astype(np.float32)
    splits[name] = {'label': label, 'dense': dense, 'cat': cat, 'prob': prob.astype(np.float32)}
  schema = Schema(dense_names=tuple(f'I{k + 1}' for k in range(NUM_DENSE)),
                  cat_names=tuple(f'C{f + 1}' for f in range(NUM_CAT)),
                  vocab_sizes=truth.vocab)
  return schema, splits
