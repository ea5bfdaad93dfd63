"""Mutual-information lower bounds from a critic score matrix (MI-DPG's regulariser).

Row i of a score matrix T [B, C] scores one positive candidate (column `positive[i]`, drawn
jointly with row i) against C - 1 negatives (stand-ins for draws from the product of the
marginals). With a cosine critic T_ic = <phi(z_i), psi(m_c)> / tau:

  InfoNCE (van den Oord et al. 2018):  I >= log C + 1/B sum_i [T_i,pos - log sum_c exp T_ic]
  JSD (Deep InfoMax, Hjelm et al. 2019, Eq. 4): E_pos[-softplus(-T)] - E_neg[softplus(T)]
  DV / MINE (Belghazi et al. 2018, Eq. 2): E_pos[T] - log E_neg[exp T]

MI-DPG maximises I(z_s; M_s) between the scenario-aware input and the generated weighting;
the paper does not say which bound it uses (research/midpg.md §1.4), so the estimator is a
field. Two candidate sets (models/midpg.py, `mi_negatives`): the S weightings the example
would get in every scenario (C = S, per-example, no cross-device communication), or the
other examples of the batch (C = B, the square matrix of `critic_scores`). InfoNCE is
bounded by log C.
"""
import jax
import jax.numpy as jnp

ESTIMATORS = ('infonce', 'jsd', 'dv')


def critic_scores(phi, psi, temperature: float):
  """T = cos(phi, psi) / temperature: phi [B, P] with psi [B, P] -> [B, B], or psi [B, C, P] -> [B, C]."""
  phi = phi / (jnp.linalg.norm(phi, axis=-1, keepdims=True) + 1e-6)
  psi = psi / (jnp.linalg.norm(psi, axis=-1, keepdims=True) + 1e-6)
  if psi.ndim == 3:
    return jnp.einsum('bp,bcp->bc', phi, psi) / temperature
  return phi @ psi.T / temperature


def estimate(scores, estimator: str = 'infonce', positive=None, weights=None):
  """The MI lower bound (nats, scalar) of a [B, C] score matrix.

  Args:
    scores: [B, C] critic scores.
    estimator: one of ESTIMATORS.
    positive: [B] int column of each row's positive (default: the diagonal, C = B).
    weights: [B] row weights (e.g. 0 for rows of an unseen scenario; default all 1).
  Returns:
    mean_i(weights_i * bound_i), a float32 scalar. Divided by B, not by sum(weights): a
    normaliser summed over the batch would be one more all-reduce in a data-parallel train
    step that the gradient all-reduce waits on (see models/midpg.py on XLA:CPU collectives).
  """
  scores = scores.astype(jnp.float32)
  b, c = scores.shape
  positive = jnp.arange(b) if positive is None else positive.astype(jnp.int32)
  weights = jnp.ones((b,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  is_pos = jax.nn.one_hot(positive, c, dtype=bool)                  # [B, C]
  pos = jnp.sum(jnp.where(is_pos, scores, 0.0), axis=1)             # [B]
  if estimator == 'infonce':
    per_row = jnp.log(c) + pos - jax.nn.logsumexp(scores, axis=1)
  elif estimator == 'jsd':
    neg = jnp.sum(jnp.where(is_pos, 0.0, jax.nn.softplus(scores)), axis=1) / max(c - 1, 1)
    per_row = -jax.nn.softplus(-pos) - neg
  elif estimator == 'dv':  # log E_neg exp T per row (C - 1 negatives), a per-row DV bound
    lse = jax.nn.logsumexp(jnp.where(is_pos, -jnp.inf, scores), axis=1)
    per_row = pos - (lse - jnp.log(max(c - 1, 1)))
  else:
    raise ValueError(f'mi estimator {estimator!r} is not one of {ESTIMATORS}.')
  return jnp.mean(per_row * weights)
