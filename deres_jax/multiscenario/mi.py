"""Mutual-information bounds (nats) over a scenario's candidate weightings (MI-DPG's regulariser).

Row i of a score matrix T [B, S] scores the scenario-aware input z_i against the sketches
m_c of the realised weightings of all S scenarios (models/weighting.py); column `positive[i]`
is the example's own scenario, drawn jointly with z_i. Because the candidates are the whole
support of m given the context, the marginal p(m) is an exact sum over scenarios with prior
weights p_c, not a sample, and the bounds below are exact lower bounds for any critic T:

  'dv'      (Donsker-Varadhan, per z; Belghazi et al. 2018 Eq. 2 with the exact marginal):
            I(z; m) >= E_i [ T_i,pos - log sum_c p_c exp T_ic ]          <= E_i[-log p_pos] = H(S)
  'infonce' (van den Oord et al. 2018 with all S candidates): the same expression with the
            uniform prior p_c = 1/S, i.e. log S + T_i,pos - logsumexp_c T_ic. It bounds the MI of
            the equiprobable scenario mix (every scenario weighs the same, a small one included)
            and is <= log S.
  'jsd'     (Jensen-Shannon divergence, Nowozin et al. 2016 / Hjelm et al. 2019 Eq. 4, in nats):
            JSD(p(z, m) || p(z) p(m)) >= log 2 - 1/2 softplus(-T_pos) - 1/2 sum_c p_c softplus(T_c)
            <= log 2. A divergence, not an MI: reported as such (docs/multiscenario.md).

When every scenario's weighting is the same (MI-DPG at initialisation) all scores of a row
are equal and every bound is <= 0; it rises only when the weightings differ. The old
estimator of this module read the raw generator factors and an in-batch DV without a
log-mean correction (20 nats at S = 4): both gone (issue 32).
"""
import jax
import jax.numpy as jnp

ESTIMATORS = ('infonce', 'dv', 'jsd')


def critic_scores(phi, psi, temperature: float):
  """T = cos(phi, psi) / temperature.

  Args:
    phi: [B, P] projections of the scenario-aware inputs.
    psi: [C, P] candidate projections shared by every row, or [B, C, P] per row.
    temperature: τ > 0; scores lie in [-1/τ, 1/τ].
  Returns:
    [B, C] scores.
  """
  # rsqrt(|x|² + ε), not x / (|x| + ε): the gradient of |x| at x = 0 is 0/0 (NaN), and an
  # unseen scenario's z is 0 with a zero-initialised critic bias (its weight 0 does not help:
  # NaN * 0 = NaN).
  phi = phi * jax.lax.rsqrt(jnp.sum(jnp.square(phi), axis=-1, keepdims=True) + 1e-12)
  psi = psi * jax.lax.rsqrt(jnp.sum(jnp.square(psi), axis=-1, keepdims=True) + 1e-12)
  if psi.ndim == 3:
    return jnp.einsum('bp,bcp->bc', phi, psi) / temperature
  return phi @ psi.T / temperature


def estimate(scores, estimator: str, positive, weights=None, prior=None):
  """The bound (nats, float32 scalar) of a [B, C] score matrix over C scenario candidates.

  Args:
    scores: [B, C] critic scores; column c is scenario c's weighting.
    estimator: one of ESTIMATORS.
    positive: [B] int, each row's own scenario.
    weights: [B] row weights (0 for rows of an unseen scenario; default all 1).
    prior: [C] scenario probabilities p_c for 'dv' and 'jsd' (default uniform; 'infonce' is
      always uniform).
  Returns:
    mean_i(weights_i * bound_i). Divided by B, not by sum(weights): a normaliser summed over
    the batch would be one more all-reduce in a data-parallel train step that the gradient
    all-reduce waits on (XLA:CPU collectives, models/midpg.py).
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f'mi estimator {estimator!r} is not one of {ESTIMATORS}.')
  scores = scores.astype(jnp.float32)
  b, c = scores.shape
  weights = jnp.ones((b,), jnp.float32) if weights is None else weights.astype(jnp.float32)
  log_p = (jnp.full((c,), -jnp.log(c)) if prior is None or estimator == 'infonce'
           else jnp.log(jnp.clip(jnp.asarray(prior, jnp.float32), 1e-12)))
  pos = jnp.take_along_axis(scores, positive.astype(jnp.int32)[:, None], axis=1)[:, 0]
  if estimator == 'jsd':
    neg = jnp.sum(jnp.exp(log_p) * jax.nn.softplus(scores), axis=1)
    per_row = jnp.log(2.0) - 0.5 * jax.nn.softplus(-pos) - 0.5 * neg
  else:  # DV with the exact marginal sum_c p_c exp T_c (InfoNCE: p uniform)
    per_row = pos - jax.nn.logsumexp(scores + log_p, axis=1)
  return jnp.mean(per_row * weights)
