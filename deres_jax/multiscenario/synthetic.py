"""Synthetic multi-scenario data with a known oracle (true click and purchase probabilities).

Scenarios share part of the label model and differ in the rest; each label's logit is

  logit_k(x, s) = b_{k,s} + sqrt(1 - a_k) * f_k(x) + sqrt(a_k) * f_{k,s}(x)

where f_k (shared) and f_{k,s} (scenario s's own) are each a first-order term plus a
factorisation-machine pairwise term over the categorical fields (per-value weights w and
latent vectors v: sum_f w[x_f] + sum_{f<g} <v[x_f], v[x_g]>), rescaled to unit variance,
times `std_logit`. `a_k` (`specific_share`) is the variance share that is scenario-specific:
0 = one model fits all scenarios, 1 = scenarios are unrelated. purchase implies click
(purchase = click AND convert, the CTCVR label of Ali-CCP), so probs[:, 1] = p_click * p_cvr.

Scenario sizes run from large to tiny (`scenario_shares`, default 0.55/0.3/0.13/0.02: at
60k training rows the last scenario has 1.2k rows), identical in every split, so the
per-scenario oracle AUC is known and small scenarios are where models separate.
Everything is a deterministic function of `seed`.
"""
import dataclasses

import numpy as np

from deres_jax.data.schema import Schema
from deres_jax.multiscenario.data import MultiScenarioData, check, set_target


@dataclasses.dataclass(frozen=True)
class MultiScenarioSpec:
  seed: int = 0
  num_train: int = 60_000
  num_val: int = 10_000
  num_test: int = 10_000
  scenario_shares: tuple = (0.55, 0.3, 0.13, 0.02)  # fraction of rows per scenario (sums to 1)
  vocab_sizes: tuple = (500, 200, 100, 50, 20, 10)   # categorical fields (each id >= 1; 0 = OOV)
  num_dense: int = 2              # dense fields: N(0, 1), the first enters the first-order term
  latent_dim: int = 4             # size of the FM latent vectors of the label model
  std_logit: float = 1.2          # std of the non-bias part of every logit
  specific_share: tuple = (0.3, 0.6)   # a_k per label (click, purchase): scenario-specific variance share
  base_rate: tuple = (0.3, 0.25)  # mean click rate; mean conversion rate given click
  std_bias: float = 0.4           # std of the per-scenario bias b_{k,s} on the logit scale
  target: str = 'purchase'        # trained label: 'click' | 'purchase' (= CTCVR) | 'ctcvr'


def _part(rng, vocab_sizes, latent_dim):
  """Parameters of one first-order + FM function of the categorical ids."""
  w = [rng.normal(0, 1, n + 1) for n in vocab_sizes]  # row 0 (OOV) is never drawn
  v = [rng.normal(0, 1, (n + 1, latent_dim)) for n in vocab_sizes]
  return w, v


def _eval_part(params, cat, dense):
  w, v = params
  first = sum(w[f][cat[:, f]] for f in range(cat.shape[1])) + (dense[:, 0] if dense.size else 0)
  vs = np.stack([v[f][cat[:, f]] for f in range(cat.shape[1])], 1)  # [N, F, k]
  pair = 0.5 * (np.square(vs.sum(1)) - np.square(vs).sum(1)).sum(-1)  # FM identity
  return first / np.sqrt(cat.shape[1]) + pair / cat.shape[1]


def generate(spec: MultiScenarioSpec) -> MultiScenarioData:
  """All three splits, the schema and the true probabilities, from `spec.seed`."""
  shares = np.asarray(spec.scenario_shares, np.float64)
  if shares.min() <= 0 or abs(shares.sum() - 1) > 1e-6:
    raise ValueError(f'scenario_shares={spec.scenario_shares} must be positive and sum to 1.')
  rng = np.random.default_rng([spec.seed, 14])
  num_s = len(shares)
  # Label model: per label k a shared part, S specific parts, S biases.
  model = []
  for k in range(2):
    shared = _part(rng, spec.vocab_sizes, spec.latent_dim)
    own = [_part(rng, spec.vocab_sizes, spec.latent_dim) for _ in range(num_s)]
    bias = rng.normal(0, spec.std_bias, num_s)
    model.append((shared, own, bias))
  # Standardise each part on a reference sample, so std_logit and a_k mean what they say.
  ref = _rows(np.random.default_rng([spec.seed, 15]), spec, 20_000, shares)
  scale = [(_moments(m[0], ref), [_moments(o, ref) for o in m[1]]) for m in model]
  splits = {}
  for i, (name, n) in enumerate((('train', spec.num_train), ('val', spec.num_val),
                                 ('test', spec.num_test))):
    cat, dense, scen = _rows(np.random.default_rng([spec.seed, 16 + i]), spec, n, shares)
    logits = []
    for k, (shared, own, bias) in enumerate(model):
      a = spec.specific_share[k]
      z = np.sqrt(1 - a) * _standard(shared, scale[k][0], cat, dense)
      spec_part = np.zeros(n)
      for s in range(num_s):
        rows = scen == s
        spec_part[rows] = _standard(own[s], scale[k][1][s], cat[rows], dense[rows])
      base = np.log(spec.base_rate[k] / (1 - spec.base_rate[k]))
      logits.append(base + bias[scen] + spec.std_logit * (z + np.sqrt(a) * spec_part))
    p_click, p_cvr = (1 / (1 + np.exp(-l)) for l in logits)
    lab_rng = np.random.default_rng([spec.seed, 20 + i])
    click = lab_rng.random(n) < p_click
    buy = click & (lab_rng.random(n) < p_cvr)
    labels = np.stack([click, buy], 1).astype(np.float32)
    probs = np.stack([p_click, p_click * p_cvr], 1).astype(np.float32)
    splits[name] = {'labels': labels, 'label': set_target(labels, ('click', 'purchase'), spec.target),
                    'probs': probs, 'cat': cat, 'dense': dense.astype(np.float32),
                    'scenario': scen.astype(np.int32)}
    splits[name]['prob'] = set_target(probs, ('click', 'purchase'), spec.target)
  schema = Schema(dense_names=tuple(f'd{j}' for j in range(spec.num_dense)),
                  cat_names=tuple(f'c{j}' for j in range(len(spec.vocab_sizes))),
                  vocab_sizes=tuple(v + 1 for v in spec.vocab_sizes), num_scenarios=num_s)
  return check(MultiScenarioData(schema, splits, ('click', 'purchase'), spec.target,
                                 tuple(f's{s}' for s in range(num_s)),
                                 f'synthetic_multiscenario(seed={spec.seed})'))


def _rows(rng, spec, n, shares):
  """Zipf-like ids (1-based; 0 stays the OOV row), N(0,1) dense values, scenario ids."""
  scen = np.repeat(np.arange(len(shares)), np.round(shares * n).astype(int))[:n]
  scen = np.concatenate([scen, np.zeros(n - len(scen), int)])
  rng.shuffle(scen)
  cat = np.stack([np.minimum(rng.zipf(1.3, n), v) for v in spec.vocab_sizes], 1).astype(np.int32)
  dense = rng.normal(0, 1, (n, spec.num_dense))
  return cat, dense, scen


def _moments(params, ref):
  y = _eval_part(params, ref[0], ref[1])
  return y.mean(), y.std() + 1e-9


def _standard(params, moments, cat, dense):
  return (_eval_part(params, cat, dense) - moments[0]) / moments[1]
