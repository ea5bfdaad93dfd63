"""MI-DPG (Cheng et al., CIKM 2023; arXiv 2603.21209): generated low-rank scenario weightings
of the backbone, with a mutual-information regulariser.

  z_s   = [e_scenario ; sg(mean field embedding)]     (scenario-aware input; context optional)
  h_z   = ReLU(W_g z_s + b_g)                          (the auxiliary network, shared trunk)
  h_l+1 = ReLU(h_l (W_l ⊙ M_{l,s}) + b_l + b_{l,s})    (every backbone layer, weights.py forms)
  logit = h_L (w ⊙ m_s) + b                            (the output layer too if modulate='all')
  loss  = BCE - λ Î(z_s ; vec(factors_s))              (aux['losses']['mi'], mi.py estimators)

The paper's body is not public (research/midpg.md §1.4): the form of M (⊙ with 1 + low rank),
the rank, which layers, the context, the MI bound, its critic, temperature and λ are all
reconstructions and config fields below. Î is computed over the batch with the example's
own (z, factors) pair as the positive; the factors (A, B per layer, or the core G) are a
sufficient statistic of M_s, so Î(z; factors) is the quantity maximised. With the
scenario-specific factors at zero MI-DPG is exactly the shared model W ⊙ M_sh (a test).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario import mi
from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.weighting import ModulatedDense


class MIDPG(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  embed_dim: int = 16           # E: per-field embedding size
  hidden: tuple = (256, 128)    # backbone MLP widths (the same in every baseline)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  context: str = 'none'         # paper leaves open: 'none' z = e_s; 'features' z = [e_s; sg(mean field emb)]
  gen_hidden: int = 64          # width of the auxiliary network's trunk (paper leaves open)
  form: str = 'elementwise'     # paper leaves open: W ⊙ M ('elementwise'), APG core 'core', W·M 'product'
  rank: int = 4                 # r of the scenario-specific factors (paper leaves open)
  shared_rank: int = 4          # r of the scenario-shared factors (paper leaves open; 0 = none)
  compute: str = 'factored'     # 'factored' (never forms per-example W) | 'materialised' (reference)
  modulate: str = 'all'         # paper: "complete parameter space": 'all' layers incl. output | 'hidden'
  scenario_bias: bool = True    # b_{l,s}: a per-scenario bias on every layer (paper leaves open)
  mi_estimator: str = 'infonce'  # paper leaves open: 'infonce' | 'jsd' | 'dv' | 'none'
  mi_weight: float = 0.01       # λ: loss -= λ Î (paper leaves open; notes suggest 1e-3..1e-1)
  mi_temperature: float = 0.1   # τ of the cosine critic
  mi_dim: int = 32              # projection size of the critic's two heads
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'context': ('none', 'features'), 'form': ModulatedDense.FORMS,
                             'compute': ('factored', 'materialised'),
                             'modulate': ('all', 'hidden'),
                             'mi_estimator': mi.ESTIMATORS + ('none',)}

  def check(self) -> None:
    if self.form == 'product' and self.compute == 'materialised' and self.modulate == 'all':
      pass  # allowed: the output layer's d_out = 1 makes the product form a scalar gain
    if self.mi_temperature <= 0:
      raise ValueError(f'mi_temperature={self.mi_temperature} must be positive; try 0.1.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    z = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    if self.context == 'features':  # stop-gradient: the generator must not reshape the embeddings
      ctx = jax.lax.stop_gradient(x.reshape(x.shape[0], -1, self.embed_dim).mean(1))
      z = jnp.concatenate([z, ctx.astype(z.dtype)], -1)
    h_z = nn.relu(nn.Dense(self.gen_hidden, dtype=self.dtype, name='scenario_gen')(z))
    gens = []
    widths = tuple(self.hidden) + (1,)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      if last and self.modulate == 'hidden':
        y = nn.Dense(1, dtype=self.dtype, name='logit')(x)
      else:
        y, gen = ModulatedDense(width, self.rank, self.shared_rank, self.form, self.compute,
                                self.dtype, name=f'layer_{i}')(x, h_z, known)
        gens.append(gen)
      if self.scenario_bias:
        b_s = self.param(f'scenario_bias_{i}', nn.initializers.zeros, (self.num_scenarios, width))
        y = y + jnp.take(b_s, ids, axis=0).astype(y.dtype) * known[:, None]
      x = y if last else nn.relu(y)
    logit = x[:, 0].astype(jnp.float32)
    if self.mi_estimator != 'none':
      m = jnp.concatenate(gens, -1)
      phi = nn.Dense(self.mi_dim, name='scenario_critic_z')(z.astype(jnp.float32))
      psi = nn.Dense(self.mi_dim, name='scenario_critic_m')(m.astype(jnp.float32))
      est = mi.estimate(mi.critic_scores(phi, psi, self.mi_temperature), self.mi_estimator)
      aux['mi'] = est
      aux['losses'] = {'mi': -self.mi_weight * est}
    return logit, aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    k = self.shared_rank + self.rank
    dense = sum(2 * a * b * (1 + k) for a, b in zip(d[:-1], d[1:]))
    return {'backbone': dense, 'total': dense}
