"""FinalNet (Zhu et al., SIGIR 2023, "FINAL: Factorized Interaction Layer for CTR Prediction").

A FINAL layer replaces a Dense layer of an MLP and adds a quadratic term (FuxiCTR's form):
  [a ; b] = W x + c                          (one linear map whose output is split in halves)  (1)
  'concat':  h = [a ; a * b]                 (W: d_in -> d_out, a and b of width d_out/2)       (2)
  'sum':     h = a + a * b                   (W: d_in -> 2 d_out, a and b of width d_out)       (3)
a is the layer's residual (first-order) part, a * b its factorized interaction, so L stacked
layers reach interaction degree 2^L. A FINAL block stacks layers with norm, activation, dropout:
  x_{l+1} = Dropout(act(Norm(FINAL_l(x_l))))                                                    (4)
Field gate (block 1 only): G = V E + u, a linear map over the field axis (V: [F, F], shared by
the E embedding dims), initialised V = 0, u = 1; block 1 reads flatten([E ; E * G]) ([2F*E]).  (5)
  towers=1 ('1B'):  logit = y_1 = w_1^T Block_1(gate(E)) + c_1
  towers=2 ('2B'):  y_2 = w_2^T Block_2(flatten(E)) + c_2,   logit = (y_1 + y_2) / 2             (6)
With two towers each tower is also distilled towards the ensemble (FuxiCTR's `add_loss`):
  aux['losses']['distill'] = sum_k BCE(y_k, stopgrad(sigmoid(logit)))                           (7)

Reconstruction choices: FuxiCTR follows each FINAL layer with BatchNorm; the training step here
keeps parameters only (no batch statistics), so `norm='layer'` uses LayerNorm instead. Default
sizes are the BARS Criteo_x4 best run (AUC 0.81497: E=16, 2 towers, block 1 1000-1000-1000,
block 2 512, ReLU, 'concat', field gate on), except dropout (0.4 there) which defaults to 0.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from deres_jax.models import flops
from deres_jax.models.tokenizer import FeatureTokenizer

LAYER_NORM_FLOPS = 7  # per normalised element, as counted in wukong.py (XLA counts about 7.4)


class FinalBlock(nn.Module):
  """FINAL layers (Eqs. 1-4) on a [B, d_in] vector; returns [B, hidden[-1]]."""
  hidden: tuple                 # FINAL layer widths
  residual: str = 'concat'      # 'concat' | 'sum' (Eqs. 2, 3)
  norm: str = 'layer'           # 'layer' | 'none'
  activation: str = 'relu'      # 'relu' | 'none'
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    for i, width in enumerate(self.hidden):
      out = width if self.residual == 'concat' else 2 * width
      a, b = jnp.split(nn.Dense(out, dtype=self.dtype, name=f'final_{i}')(x), 2, axis=-1)
      x = jnp.concatenate([a, a * b], -1) if self.residual == 'concat' else a + a * b  # [B, width]
      if self.norm == 'layer':
        x = nn.LayerNorm(dtype=self.dtype, name=f'norm_{i}')(x)
      if self.activation == 'relu':
        x = nn.relu(x)
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


class FinalNet(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields (each embedded like the Transformer's)
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  embed_dim: int = 16           # E: per-field embedding size
  towers: int = 2               # 1: block 1 only ('1B'); 2: blocks 1 and 2, logits averaged ('2B')
  block1_hidden: tuple = (1000, 1000, 1000)  # FINAL layer widths of block 1 (on the gated fields)
  block2_hidden: tuple = (512,)  # FINAL layer widths of block 2 (plain fields; towers=2 only)
  residual: str = 'concat'      # FINAL output: 'concat' [a; a*b] (even widths) | 'sum' a + a*b
  field_gate: bool = True       # block 1 reads [E; E*G] with G a linear map over fields (init 1)
  norm: str = 'layer'           # after each FINAL layer: 'layer' (stands in for BatchNorm) | 'none'
  activation: str = 'relu'      # after each FINAL layer: 'relu' | 'none' (a pure polynomial)
  dropout: float = 0.0          # dropout after each FINAL layer (BARS Criteo_x4 best run: 0.4)
  distill: bool = True          # towers=2: add aux loss sum_k BCE(y_k, stopgrad(sigmoid(logit)))
  dense_transform: str = 'log1p'  # dense value transform before embedding: 'log1p' | 'none'
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'residual': ('concat', 'sum'), 'norm': ('layer', 'none'),
                             'activation': ('relu', 'none'), 'dense_transform': ('log1p', 'none')}

  def check(self) -> None:
    for field, choices in self.CHOICES.items():
      if getattr(self, field) not in choices:
        raise ValueError(f'{field}={getattr(self, field)!r} is not one of {list(choices)}.')
    if self.towers not in (1, 2):
      raise ValueError(f'towers={self.towers} must be 1 (block 1 only) or 2 (blocks 1 and 2).')
    if self.embed_dim <= 0:
      raise ValueError(f'embed_dim={self.embed_dim} must be positive; set embed_dim >= 1.')
    blocks = {'block1_hidden': self.block1_hidden}
    if self.towers == 2:
      blocks['block2_hidden'] = self.block2_hidden
    for field, hidden in blocks.items():
      if not hidden or any(w <= 0 for w in hidden):
        raise ValueError(f'{field}={hidden} must be a non-empty tuple of positive widths.')
      if self.residual == 'concat' and any(w % 2 for w in hidden):
        raise ValueError(f"{field}={hidden} has an odd width, which residual='concat' splits "
                         "in halves; use even widths or residual='sum'.")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'dropout={self.dropout} must lie in [0, 1); set a rate such as 0.1.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim,
                                self.embed_dim, 'field', dense_transform=self.dense_transform,
                                dtype=self.dtype, seq_share=self.seq_share, name='tokenizer')(batch)
    n, f, _ = emb.shape
    block = dict(residual=self.residual, norm=self.norm, activation=self.activation,
                 dropout=self.dropout, dtype=self.dtype)
    x1 = emb
    if self.field_gate:  # Eq. 5: starts as G = 1, i.e. block 1 reads [E; E]
      v = self.param('gate_kernel', nn.initializers.zeros, (f, f), jnp.float32)
      u = self.param('gate_bias', nn.initializers.ones, (f,), jnp.float32)
      gate = jnp.einsum('gf,bfe->bge', v.astype(self.dtype), emb) + u[:, None].astype(self.dtype)
      x1 = jnp.concatenate([emb, emb * gate], axis=1)  # [B, 2F, E]
    h1 = FinalBlock(self.block1_hidden, **block, name='block1')(x1.reshape(n, -1), train)
    logit = nn.Dense(1, dtype=jnp.float32, name='head1')(h1)[..., 0].astype(jnp.float32)  # [B]
    if self.towers == 2:
      h2 = FinalBlock(self.block2_hidden, **block, name='block2')(emb.reshape(n, -1), train)
      y2 = nn.Dense(1, dtype=jnp.float32, name='head2')(h2)[..., 0].astype(jnp.float32)
      y1, logit = logit, 0.5 * (logit + y2)  # Eq. 6
      if self.distill:  # Eq. 7: each tower learns the ensemble's (fixed) probability
        target = jax.lax.stop_gradient(jax.nn.sigmoid(logit))
        aux['losses'] = {'distill': sum(optax.sigmoid_binary_cross_entropy(y, target).mean()
                                        for y in (y1, y2))}
    return logit, aux

  def flops_per_example(self) -> dict:
    f, e = len(self.vocab_sizes) + self.num_dense, self.embed_dim

    def block(d_in, hidden):  # Eq. 1: one Dense of width d_out ('concat') or 2 d_out ('sum')
      widths = [w if self.residual == 'concat' else 2 * w for w in hidden]
      norm = LAYER_NORM_FLOPS * sum(hidden) if self.norm == 'layer' else 0
      return norm + sum(flops.dense(a, b) for a, b in zip((d_in, *hidden[:-1]), widths))

    parts = {'field_gate': flops.dense(f, f, tokens=e) if self.field_gate else 0,
             'block1': block((2 if self.field_gate else 1) * f * e, self.block1_hidden),
             'head1': flops.dense(self.block1_hidden[-1], 1)}
    if self.towers == 2:
      parts.update(block2=block(f * e, self.block2_hidden),
                   head2=flops.dense(self.block2_hidden[-1], 1))
    return flops.total(parts)
