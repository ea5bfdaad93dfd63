"""MI-DPG (Cheng et al., CIKM 2023; arXiv 2603.21209): generated low-rank scenario weightings
of the backbone, with a mutual-information regulariser.

  z_s   = [e_scenario ; sg(mean field embedding)]     (scenario-aware input; context optional)
  h_z   = ReLU(W_g z_s + b_g)                          (the auxiliary network, shared trunk)
  h_l+1 = ReLU(h_l (W_l ⊙ M_{l,s}) + b_l + b_{l,s})    (every backbone layer, weights.py forms)
  logit = h_L (w ⊙ m_s) + b                            (the output layer too if modulate='all')
  loss  = BCE - λ Î(z_s ; vec(factors_s))              (aux['losses']['mi'], mi.py estimators)

The paper's body is not public (research/midpg.md §1.4): the form of M (⊙ with 1 + low rank),
the rank, which layers, the context, the MI bound, its critic, temperature and λ are all
reconstructions and config fields below. The factors (A, B per layer, or the core G) are a
sufficient statistic of M_s, so Î(z; factors) is the quantity maximised. Negatives
(`mi_negatives`): 'scenarios' (default) scores each example's own factors against the
factors the same example would get in each of the other S - 1 scenarios (z with e_s'
swapped in), so Î <= log S measures how distinguishable the scenarios' weightings are and
is computed per example; 'batch' uses the other examples of the batch (Î <= log B), whose
[B, B] critic needs every example's factors on every device: an all-gather over the 'data'
axis in the train step. XLA:CPU runs independent thunks of one step concurrently, so
two independent collectives (the all-gathers of phi and psi, or an all-gather beside the
gradient all-reduce) can be entered in different orders by the 8 device threads; on an
oversubscribed CPU the rendezvous then never completes and the runtime aborts after 40 s
("Termination timeout for all gather"). That was the abort of the first version of this
module, so the default keeps the step at one collective (the gradient all-reduce, as in
the CTR models; a test counts them) and the trainer refuses 'batch' on several CPU
devices. Rows of an unseen scenario carry no MI weight. With the scenario-specific
factors at zero MI-DPG is exactly the shared model W ⊙ M_sh (a test).
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
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
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
  mi_negatives: str = 'scenarios'  # paper leaves open: 'scenarios' (the example's M under all S) | 'batch'
  mi_temperature: float = 0.1   # τ of the cosine critic
  mi_dim: int = 32              # projection size of the critic's two heads
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'context': ('none', 'features'), 'form': ModulatedDense.FORMS,
                             'compute': ('factored', 'materialised'),
                             'modulate': ('all', 'hidden'),
                             'mi_estimator': mi.ESTIMATORS + ('none',),
                             'mi_negatives': ('scenarios', 'batch')}

  def check(self) -> None:
    if self.mi_temperature <= 0:
      raise ValueError(f'mi_temperature={self.mi_temperature} must be positive; try 0.1.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    z = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    if self.context == 'features':  # stop-gradient: the generator must not reshape the embeddings
      ctx = jax.lax.stop_gradient(x.reshape(x.shape[0], -1, self.embed_dim).mean(1))
      z = jnp.concatenate([z, ctx.astype(z.dtype)], -1)
    gen_trunk = nn.Dense(self.gen_hidden, dtype=self.dtype, name='scenario_gen')
    h_z = nn.relu(gen_trunk(z))
    # MI candidates (mi_negatives='scenarios'): the example's z under every scenario s',
    # z_s' = [e_s' ; ctx]; their generated factors are the critic's C = S columns.
    z_cand, h_cand = None, None
    if self.mi_estimator != 'none' and self.mi_negatives == 'scenarios':
      table = self.variables['params']['scenario_embed']['embedding_table']     # [S, e]
      z_cand = jnp.broadcast_to(table.astype(z.dtype)[None], (x.shape[0],) + table.shape)
      if self.context == 'features':
        z_cand = jnp.concatenate([z_cand, jnp.broadcast_to(
            ctx.astype(z.dtype)[:, None], (x.shape[0], self.num_scenarios, ctx.shape[-1]))], -1)
      h_cand = nn.relu(gen_trunk(z_cand))                                     # [B, S, G]
    gens, cands = [], []
    widths = tuple(self.hidden) + (1,)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      if last and self.modulate == 'hidden':
        y = nn.Dense(1, dtype=self.dtype, name='logit')(x)
      else:
        y, gen, cand = ModulatedDense(width, self.rank, self.shared_rank, self.form, self.compute,
                                      self.dtype, name=f'layer_{i}')(x, h_z, known, h_cand)
        gens.append(gen)
        cands.append(cand)
      if self.scenario_bias:
        b_s = self.param(f'scenario_bias_{i}', nn.initializers.zeros, (self.num_scenarios, width))
        y = y + jnp.take(b_s, ids, axis=0).astype(y.dtype) * known[:, None]
      x = y if last else nn.relu(y)
    logit = x[:, 0].astype(jnp.float32)
    if self.mi_estimator != 'none':
      critic_z = nn.Dense(self.mi_dim, name='scenario_critic_z')
      critic_m = nn.Dense(self.mi_dim, name='scenario_critic_m')
      phi = critic_z(z.astype(jnp.float32))                                   # [B, P]
      if self.mi_negatives == 'scenarios':
        # Per example: its own scenario's factors (unmasked) against the other scenarios'.
        psi = critic_m(jnp.concatenate(cands, -1).astype(jnp.float32))        # [B, S, P]
        scores = mi.critic_scores(phi, psi, self.mi_temperature)             # [B, S]
        est = mi.estimate(scores, self.mi_estimator, positive=ids, weights=known)
      else:
        # In-batch negatives: the [B, B] matrix needs every example's factors on every device.
        psi = critic_m(jnp.concatenate(gens, -1).astype(jnp.float32))
        est = mi.estimate(mi.critic_scores(phi, psi, self.mi_temperature), self.mi_estimator,
                          weights=known)
      aux['mi'] = est
      aux['losses'] = {'mi': -self.mi_weight * est}
    return logit, aux

  def flops_per_example(self) -> dict:
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    k = self.shared_rank + self.rank
    dense = sum(2 * a * b * (1 + k) for a, b in zip(d[:-1], d[1:]))
    return {'backbone': dense, 'total': dense}
