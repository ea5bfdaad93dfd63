"""MI-DPG (Cheng et al., CIKM 2023; arXiv 2603.21209): generated low-rank scenario weightings
of the backbone, with a mutual-information regulariser.

  z     = e_s  (context='none')  or  [e_s ; sg(mean field embedding)]  ('features')
  h_z   = ReLU(W_g z + b_g)                          (the auxiliary network, shared trunk)
  h_l+1 = ReLU(h_l (W_l ⊙ M_{l,z}) + b_l + b_{l,s})    (every backbone layer, weighting.py forms)
  logit = h_L (w ⊙ m_z) + b                          (the output layer too if modulate='all')
  loss  = BCE - λ Î(z ; m̃),  m̃ = [Uᵀ(W_l ⊙ M_{l,z})V / rms]_l + σ ε   (aux['losses']['mi'])

What the MI term measures (issue 32). The critic reads m̃: a fixed random p x p sketch of every
layer's *realised* weighting W_l ⊙ M_{l,z} (not the generator's factors), each layer divided
by its stop-gradient RMS over the candidates, plus Gaussian noise of std σ = `mi_noise`
during training. The candidates of an example are the weightings it would get in each of
the S scenarios (its own is the positive), so the marginal is an exact sum over scenarios
and `mi.py`'s bounds are exact lower bounds in nats. At initialisation every scenario's
weighting is the same (B(z) = 0), all scores of a row are equal and Î = 0. Without noise a
deterministic weighting gives I = H(S) as soon as the weightings differ at all (the
degenerate objective the review found); with noise the MI of the Gaussian channel grows with
how far apart the scenarios' realised weightings are relative to the weighting's own scale,
so maximising it pushes the scenario-specific parts of W ⊙ M apart: the paper's "diversity
of model parameters across scenarios". Per-example context ('features') makes z and M
depend on the example too; then everything is computed per example.

Computation (`compute`): 'auto' is 'per_scenario' when z depends on the scenario only
(context='none'): each scenario's factors and W_s once per step, every example through the
S + 1 weightings, its own kept (STAR's cost); else 'factored' per example. 'materialised'
is the per-example reference. A test checks logits and gradients agree across forms.

The paper's body is not public (research/midpg.md §1.4): the form of M, the rank, which
layers, the context, the MI bound, the critic, σ, τ and λ are reconstructions and config
fields. Rows of an unseen scenario get W ⊙ M_sh and carry no MI weight. The train step
keeps one collective (the gradient all-reduce; a test counts them).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.multiscenario import mi
from deres_jax.multiscenario.models import inputs
from deres_jax.multiscenario.models.weighting import ModulatedDense


class MIDPG(nn.Module):
  vocab_sizes: tuple            # rows per categorical field, then per sequence field (OOV row 0 included)
  num_dense: int                # dense fields
  num_scenarios: int            # S
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared categorical field or -1
  embed_dim: int = 16           # E: per-field embedding size
  backbone: str = 'mlp'         # 'mlp' | 'deres': the DeRes Transformer over the field tokens first
  hidden: tuple = (256, 128)    # backbone MLP widths (the same in every baseline)
  scenario_dim: int = 16        # size of the scenario embedding e_s
  context: str = 'none'         # paper leaves open: 'none' z = e_s; 'features' z = [e_s; sg(mean field emb)]
  gen_hidden: int = 64          # width of the auxiliary network's trunk (paper leaves open)
  form: str = 'elementwise'     # paper leaves open: W ⊙ M ('elementwise'), APG core 'core', W·M 'product'
  rank: int = 4                 # r of the scenario-specific factors (paper leaves open)
  shared_rank: int = 4          # r of the scenario-shared factors (paper leaves open; 0 = none)
  compute: str = 'auto'         # 'auto': per_scenario if context='none', else factored (weighting.py)
  modulate: str = 'all'         # paper: "complete parameter space": 'all' layers incl. output | 'hidden'
  scenario_bias: bool = True    # b_{l,s}: a per-scenario bias on every layer (paper leaves open)
  mi_estimator: str = 'infonce'  # paper leaves open: 'infonce' | 'dv' | 'jsd' (a JSD, not an MI) | 'none'
  mi_weight: float = 0.01       # λ: loss -= λ Î (paper leaves open; notes suggest 1e-3..1e-1)
  mi_temperature: float = 0.1   # τ of the cosine critic
  mi_dim: int = 32              # projection size of the critic's two heads
  mi_sketch: int = 4            # p: the critic reads a fixed random p x p sketch per layer of W ⊙ M
  mi_noise: float = 0.1         # σ: noise on the RMS-normalised sketch in training (0 = degenerate MI)
  scenario_prior: tuple = ()    # set from the training rows by the family: p(s) for 'dv'/'jsd' (() = uniform)
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'context': ('none', 'features'), 'form': ModulatedDense.FORMS,
                             'compute': ('auto',) + ModulatedDense.COMPUTES,
                             'modulate': ('all', 'hidden'),
                             'mi_estimator': mi.ESTIMATORS + ('none',)}

  def check(self) -> None:
    if self.mi_temperature <= 0:
      raise ValueError(f'mi_temperature={self.mi_temperature} must be positive; try 0.1.')
    if self.compute == 'per_scenario' and self.context != 'none':
      raise ValueError("compute='per_scenario' needs context='none' (a weighting that depends on "
                       "the scenario only); use compute='auto' or 'factored' with context="
                       f"{self.context!r}.")
    if self.mi_sketch < 1 or self.mi_noise < 0:
      raise ValueError(f'mi_sketch={self.mi_sketch} must be >= 1 and mi_noise={self.mi_noise} >= 0.')

  def mode(self) -> str:
    if self.compute != 'auto':
      return self.compute
    return 'per_scenario' if self.context == 'none' else 'factored'

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = inputs.features(self.vocab_sizes, self.num_dense, self.embed_dim, self.dtype, batch,
                             self.backbone, self.seq_share)
    ids, known = inputs.scenario_ids(batch, self.num_scenarios)
    z = inputs.ScenarioEmbed(self.num_scenarios, self.scenario_dim, name='scenario_embed')(ids, known)
    table = self.variables['params']['scenario_embed']['embedding_table'].astype(z.dtype)  # [S, e]
    b, s, mode = x.shape[0], self.num_scenarios, self.mode()
    if self.context == 'features':  # stop-gradient: the generator must not reshape the embeddings
      ctx = jax.lax.stop_gradient(x.reshape(b, -1, self.embed_dim).mean(1)).astype(z.dtype)
      z = jnp.concatenate([z, ctx], -1)
    gen_trunk = nn.Dense(self.gen_hidden, dtype=self.dtype, name='scenario_gen')
    with_mi = self.mi_estimator != 'none'
    h_cand = None
    if mode == 'per_scenario':  # the S scenarios' codes, once per step
      h = nn.relu(gen_trunk(table))                                           # [S, G]
    else:
      h = nn.relu(gen_trunk(z))                                               # [B, G]
      if with_mi:  # the example's z under every scenario s': z_s' = [e_s' ; ctx]
        z_cand = jnp.broadcast_to(table[None], (b,) + table.shape)
        if self.context == 'features':
          z_cand = jnp.concatenate([z_cand, jnp.broadcast_to(ctx[:, None], (b, s, ctx.shape[-1]))], -1)
        h_cand = nn.relu(gen_trunk(z_cand))                                   # [B, S, G]
    sketches = []
    widths = tuple(self.hidden) + (1,)
    for i, width in enumerate(widths):
      last = i == len(widths) - 1
      if last and self.modulate == 'hidden':
        y = nn.Dense(1, dtype=self.dtype, name='logit')(x)
      else:
        y, sk = ModulatedDense(width, self.rank, self.shared_rank, self.form, mode, self.mi_sketch,
                               self.dtype, name=f'layer_{i}')(x, h, ids, known, h_cand, with_mi)
        sketches.append(sk)
      if self.scenario_bias:
        b_s = self.param(f'scenario_bias_{i}', nn.initializers.zeros, (s, width))
        y = y + jnp.take(b_s, ids, axis=0).astype(y.dtype) * known[:, None]
      x = y if last else nn.relu(y)
    logit = x[:, 0].astype(jnp.float32)
    if with_mi:
      est, aux['mi_scores'] = self._mi(z, sketches, ids, known, train)
      aux['mi'] = est
      aux['losses'] = {'mi': -self.mi_weight * est}
    return logit, aux

  def _mi(self, z, sketches, ids, known, train):
    """Î(z; m̃) over the S candidates: [S, n] (per_scenario) or [B, S, n] sketches per layer."""
    parts = []
    for sk in sketches:  # each layer at unit RMS (stop-gradient: σ is relative to W ⊙ M's scale)
      # RMS over one example's S candidates ([S, n] or each row of [B, S, n]): a mean over the
      # batch would be a second all-reduce in the data-parallel step (see the docstring).
      sk = sk.astype(jnp.float32)
      rms = jnp.sqrt(jnp.mean(jnp.square(sk), axis=(-2, -1), keepdims=True))
      parts.append(sk / (jax.lax.stop_gradient(rms) + 1e-6))
    m = jnp.concatenate(parts, -1)
    if train and self.mi_noise > 0:
      m = m + self.mi_noise * jax.random.normal(self.make_rng('dropout'), m.shape)
    phi = nn.Dense(self.mi_dim, name='scenario_critic_z')(z.astype(jnp.float32))   # [B, P]
    psi = nn.Dense(self.mi_dim, name='scenario_critic_m')(m)                       # [(B,) S, P]
    scores = mi.critic_scores(phi, psi, self.mi_temperature)                      # [B, S]
    prior = jnp.asarray(self.scenario_prior, jnp.float32) if self.scenario_prior else None
    return mi.estimate(scores, self.mi_estimator, ids, known, prior), scores

  def flops_per_example(self) -> dict:
    """Forward FLOPs per example of the modulated layers (the weights' formation per step and
    the MI critic excluded: per_scenario forms S + 1 weightings once per batch)."""
    d = [(len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1]
    pairs = list(zip(d[:-1], d[1:]))
    if self.mode() == 'per_scenario':
      dense = sum(2 * a * b * (self.num_scenarios + 1) for a, b in pairs)
    elif self.mode() == 'materialised':
      dense = sum(2 * a * b for a, b in pairs)
    else:
      k = self.shared_rank + self.rank
      dense = sum(2 * a * b * (1 + k) for a, b in pairs)
    return {'backbone': dense, 'total': dense}
