"""A second synthetic CTR task with a known oracle and a different structure: multi-interest users.

`config.data.name='synthetic_interest'`. Where `synthetic.py` draws polynomial (factorisation
machine and CP tensor) interactions among low-cardinality fields, this generator draws

  logit = b + first-order + multi-interest + dense x categorical + 3-way context term,

  first-order:      a weight per categorical value and a slope per (standardised log) dense field;
  multi-interest:   max_k <u_k(user fields), v(item fields)>: a user is K interest vectors,
                    u_k = sum_{f in user} A_f[id_f, k], the item one vector v = sum_{g in item}
                    B_g[id_g]; the click depends on the best-matching interest (a max, not a
                    polynomial: DIN / MIND-style user modelling);
  dense x category: sum over (dense d, field f) pairs of z_d * s_f[id_f] (a category changes
                    how a count matters, e.g. price sensitivity per user segment);
  3-way context:    sum over triples of prod of +-1 signs of (user, item, context) values
                    (a parity: no lower-order term carries it).

Fields: 8 user, 8 item, 4 context categorical fields (vocabularies log-spaced 10..max_vocab,
Zipf-distributed ids, some missing) and 6 dense fields. Each component is rescaled to a
configured standard deviation, the intercept sets the positive rate; every row keeps its true
probability in 'prob', so the oracle AUC/logloss of a split are known. Deterministic in `seed`.
"""
import dataclasses

import numpy as np

from deres_jax.data.schema import Schema
from deres_jax.data.synthetic import _rank_scale, _sigmoid, _zipf_table

NUM_USER, NUM_ITEM, NUM_CONTEXT, NUM_DENSE = 8, 8, 4, 6
NUM_CAT = NUM_USER + NUM_ITEM + NUM_CONTEXT


@dataclasses.dataclass(frozen=True)
class InterestSpec:
  """Knobs of the generator (the same-named fields of `config.data` are used)."""
  seed: int = 0
  num_train: int = 200_000
  num_val: int = 25_000
  num_test: int = 25_000
  min_vocab: int = 10
  max_vocab: int = 50_000
  zipf_exponent: float = 1.1
  positive_rate: float = 0.2
  num_interests: int = 4          # K interest vectors per user
  interest_rank: int = 8          # size of the interest / item vectors
  num_dense_cross: int = 8        # (dense, categorical) slope pairs
  num_parity: int = 4             # 3-way sign triples
  std_first: float = 0.8
  std_interest: float = 1.0
  std_dense_cross: float = 0.6
  std_parity: float = 0.5
  half_rank: float = 30.0         # effect size of the id of frequency rank r: 1/sqrt(1 + r/half_rank)


class _Truth:
  """The hidden label model, drawn once from the seed."""

  def __init__(self, spec: InterestSpec):
    rng = np.random.default_rng([spec.seed, 7])
    self.spec = spec
    vocab = np.geomspace(spec.min_vocab, spec.max_vocab, NUM_CAT).round().astype(np.int64)
    self.vocab = tuple(int(v) for v in rng.permutation(vocab))
    self.cat_missing = rng.uniform(0, 0.2, NUM_CAT) * (rng.random(NUM_CAT) < 0.5)
    self.dense_missing = rng.uniform(0, 0.3, NUM_DENSE) * (rng.random(NUM_DENSE) < 0.5)
    self.dense_zipf = rng.uniform(1.4, 2.5, NUM_DENSE)
    self.zipf = [_zipf_table(rng, v, spec.zipf_exponent) for v in self.vocab]
    rs = [_rank_scale(perm, v, spec.half_rank) for (_, perm), v in zip(self.zipf, self.vocab)]
    self.w_cat = [rng.normal(0, 1, v) * r for v, r in zip(self.vocab, rs)]
    for w in self.w_cat:
      w[0] = 0.0
    self.w_dense = rng.normal(0, 1, NUM_DENSE)
    self.w_dense_missing = rng.normal(0, 0.5, NUM_DENSE)
    k, r = spec.num_interests, spec.interest_rank
    self.user = list(range(NUM_USER))
    self.item = list(range(NUM_USER, NUM_USER + NUM_ITEM))
    self.context = list(range(NUM_USER + NUM_ITEM, NUM_CAT))
    self.a = {f: rng.normal(0, 1, (self.vocab[f], k, r)) * rs[f][:, None, None] for f in self.user}
    self.b = {g: rng.normal(0, 1, (self.vocab[g], r)) * rs[g][:, None] for g in self.item}
    self.cross = [(int(rng.integers(NUM_DENSE)), int(rng.integers(NUM_CAT)))
                  for _ in range(spec.num_dense_cross)]
    self.s = {f: rng.normal(0, 1, self.vocab[f]) * rs[f] for _, f in self.cross}
    small = lambda fields: [f for f in fields if self.vocab[f] <= 2000] or fields
    self.parity = [(int(rng.choice(small(self.user))), int(rng.choice(small(self.item))),
                    int(rng.choice(small(self.context)))) for _ in range(spec.num_parity)]
    self.sign = [rng.choice([-1.0, 1.0], v) for v in self.vocab]
    calib = self.sample_features(np.random.default_rng([spec.seed, 99]), 50_000)
    z = np.log1p(np.nan_to_num(calib[0], nan=0.0))
    self.z_mean, self.z_std = z.mean(0), z.std(0) + 1e-6
    parts = self.components(*calib)
    self.scale = {n: getattr(spec, f'std_{n}') / (parts[n].std() + 1e-12) for n in parts}
    logit = sum(self.scale[n] * parts[n] for n in parts)
    lo, hi = -20.0, 20.0
    for _ in range(60):  # bisection: mean sigmoid(logit + b) = positive_rate
      b = (lo + hi) / 2
      lo, hi = (b, hi) if _sigmoid(logit + b).mean() < spec.positive_rate else (lo, b)
    self.bias = (lo + hi) / 2

  def sample_features(self, rng, n):
    dense = np.empty((n, NUM_DENSE), np.float32)
    for d in range(NUM_DENSE):
      x = (rng.zipf(self.dense_zipf[d], n) - 1).clip(0, 1e6).astype(np.float32)
      x[rng.random(n) < self.dense_missing[d]] = np.nan
      dense[:, d] = x
    cat = np.empty((n, NUM_CAT), np.int32)
    for f in range(NUM_CAT):
      cdf, perm = self.zipf[f]
      ids = perm[np.minimum(np.searchsorted(cdf, rng.random(n)), len(perm) - 1)]
      ids[rng.random(n) < self.cat_missing[f]] = 0
      cat[:, f] = ids
    return dense, cat

  def components(self, dense, cat):
    missing = np.isnan(dense)
    z = (np.log1p(np.where(missing, 0.0, dense)) - self.z_mean) / self.z_std
    z = np.where(missing, 0.0, z)
    first = (np.where(missing, self.w_dense_missing, z * self.w_dense).sum(1)
             + sum(self.w_cat[f][cat[:, f]] for f in range(NUM_CAT)))
    u = sum(self.a[f][cat[:, f]] for f in self.user)          # [n, K, r]
    v = sum(self.b[g][cat[:, g]] for g in self.item)          # [n, r]
    interest = np.max(np.einsum('nkr,nr->nk', u, v), axis=1)
    dense_cross = sum(z[:, d] * self.s[f][cat[:, f]] for d, f in self.cross)
    parity = sum(self.sign[f][cat[:, f]] * self.sign[g][cat[:, g]] * self.sign[h][cat[:, h]]
                 for f, g, h in self.parity)
    return {'first': first, 'interest': interest, 'dense_cross': dense_cross, 'parity': parity}

  def logit(self, dense, cat):
    parts = self.components(dense, cat)
    return self.bias + sum(self.scale[n] * parts[n] for n in parts)


def generate(spec: InterestSpec):
  """Returns (schema, {'train'|'val'|'test': split}) with a 'prob' column per split."""
  truth = _Truth(spec)
  splits = {}
  for i, (name, n) in enumerate((('train', spec.num_train), ('val', spec.num_val),
                                 ('test', spec.num_test))):
    rng = np.random.default_rng([spec.seed, 11 + i])
    dense, cat = truth.sample_features(rng, n)
    prob = _sigmoid(truth.logit(dense, cat))
    label = (rng.random(n) < prob).astype(np.float32)
    splits[name] = {'label': label, 'dense': dense, 'cat': cat, 'prob': prob.astype(np.float32)}
  names = ([f'user{i + 1}' for i in range(NUM_USER)] + [f'item{i + 1}' for i in range(NUM_ITEM)]
           + [f'ctx{i + 1}' for i in range(NUM_CONTEXT)])
  schema = Schema(dense_names=tuple(f'x{d + 1}' for d in range(NUM_DENSE)), cat_names=tuple(names),
                  vocab_sizes=truth.vocab)
  return schema, splits
