"""Mutual-information lower bounds from a critic score matrix (MI-DPG's regulariser).

Pairs (z_i, m_i) drawn together are positives; (z_i, m_j), j != i, stand in for draws from
the product of marginals. With scores T_ij = <phi(z_i), psi(m_j)> / tau (cosine critic):

  InfoNCE (van den Oord et al. 2018):  I >= log B + 1/B sum_i [T_ii - log sum_j exp T_ij]
  JSD (Deep InfoMax, Hjelm et al. 2019, Eq. 4): E_pos[-softplus(-T)] - E_neg[softplus(T)]
  DV / MINE (Belghazi et al. 2018, Eq. 2): E_pos[T] - log E_neg[exp T]

MI-DPG maximises I(z_s; M_s) between the scenario-aware input and the generated weighting;
the paper does not say which bound it uses (research/midpg.md §1.4), so the estimator is a
field. InfoNCE is bounded by log B, and by H(scenario) when z is the scenario alone.
"""
import jax
import jax.numpy as jnp

ESTIMATORS = ('infonce', 'jsd', 'dv')


def critic_scores(phi, psi, temperature: float):
  """T [B, B] = cos(phi_i, psi_j) / temperature for phi, psi [B, P]."""
  phi = phi / (jnp.linalg.norm(phi, axis=-1, keepdims=True) + 1e-6)
  psi = psi / (jnp.linalg.norm(psi, axis=-1, keepdims=True) + 1e-6)
  return phi @ psi.T / temperature


def estimate(scores, estimator: str = 'infonce'):
  """The MI lower bound (nats, scalar) of a [B, B] score matrix with positives on the diagonal."""
  scores = scores.astype(jnp.float32)
  b = scores.shape[0]
  pos = jnp.diagonal(scores)
  off = ~jnp.eye(b, dtype=bool)
  if estimator == 'infonce':
    return jnp.log(b) + jnp.mean(pos - jax.nn.logsumexp(scores, axis=1))
  if estimator == 'jsd':
    neg = jnp.sum(jnp.where(off, jax.nn.softplus(scores), 0.0)) / (b * (b - 1))
    return jnp.mean(-jax.nn.softplus(-pos)) - neg
  if estimator == 'dv':
    lse = jax.nn.logsumexp(jnp.where(off, scores, -jnp.inf))
    return jnp.mean(pos) - (lse - jnp.log(b * (b - 1)))
  raise ValueError(f'mi estimator {estimator!r} is not one of {ESTIMATORS}.')
