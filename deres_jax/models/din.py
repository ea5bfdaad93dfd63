"""DIN: Deep Interest Network (Zhou et al., KDD 2018, arXiv 1706.06978), target attention.

The user's interest is a weighted sum of the history embeddings, the weights given by the
activation unit (paper Fig. 2 / Eq. 3) from each history item and the candidate ad:

  v_U(A) = f(v_A, e_1, ..., e_H) = sum_j a(e_j, v_A) e_j,
  a(e_j, v_A) = MLP([e_j; v_A; e_j - v_A; e_j * v_A])       (PReLU hidden units, a scalar out)

without a softmax over j (the paper keeps the weights unnormalised "to reserve the intensity
of user interests"; `att_softmax=True` normalises them over the valid positions). Padded
positions get weight 0 exactly, so their embeddings never matter. The element-wise product
and difference stand in for the paper's out product, as in FuxiCTR's and DeepCTR's DIN.

Which history goes with which candidate comes from the data: a sequence field that shares a
categorical field's vocabulary (hist_item_id with item_id, hist_category with category)
takes that field's embedding as its candidate; all such fields are aligned by position and
their embeddings concatenated (e_j = [item_j; category_j], v_A = [item_A; category_A]). The
logit is an MLP over [all field embeddings (sequences pooled, tokenizer.py); v_U(A)].
Without a shared sequence field there is nothing to attend over and DIN is the DNN over the
fields. Dice activation and the paper's mini-batch aware regularisation are left out (Dice
needs batch statistics; the embedding L2 is `optim.embed_l2`).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import flops
from deres_jax.models.tokenizer import FeatureTokenizer


class PReLU(nn.Module):
  """max(0, x) + alpha * min(0, x), alpha learned per unit (DIN's activation unit)."""
  init: float = 0.25            # alpha at initialisation (He et al. 2015)

  @nn.compact
  def __call__(self, x):
    alpha = self.param('alpha', nn.initializers.constant(self.init), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class TargetAttention(nn.Module):
  """The DIN activation unit and weighted sum: (keys [B, L, D], query [B, D], mask [B, L]) -> [B, D]."""
  hidden: tuple = (80, 40)      # widths of the activation unit's PReLU layers (the paper's 80-40)
  softmax: bool = False         # normalise the weights over valid positions (the paper: no)
  dtype: Any = jnp.float32      # computation dtype

  @nn.compact
  def __call__(self, keys, query, mask):
    q = jnp.broadcast_to(query[:, None, :], keys.shape)  # [B, L, D]
    x = jnp.concatenate([keys, q, keys - q, keys * q], axis=-1)  # [B, L, 4D]
    for i, width in enumerate(self.hidden):
      x = PReLU(name=f'prelu_{i}')(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
    score = nn.Dense(1, dtype=self.dtype, name='score')(x)[..., 0].astype(jnp.float32)  # [B, L]
    if self.softmax:
      weight = jax.nn.softmax(jnp.where(mask, score, -1e30), axis=-1) * mask
    else:
      weight = jnp.where(mask, score, 0.0)
    self.sow('intermediates', 'weights', weight)
    return jnp.einsum('bl,bld->bd', weight.astype(keys.dtype), keys), weight

  def flops(self, length: int, d: int) -> int:
    widths = (4 * d, *self.hidden, 1)
    return sum(flops.dense(a, b, length) for a, b in zip(widths[:-1], widths[1:])) + 2 * length * d


class DIN(nn.Module):
  """Field embeddings + target attention over the histories -> MLP -> logit."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields (each embedded like the Transformer's)
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  seq_len: int = 0              # filled from the data: L, the history length (for the FLOPs count)
  embed_dim: int = 16           # E: per-field embedding size
  att_hidden: tuple = (80, 40)  # activation unit widths (DIN paper: 80-40, PReLU)
  att_softmax: bool = False     # softmax-normalised attention weights (the paper: unnormalised)
  hidden: tuple = (200, 80)     # MLP widths after the embeddings (DIN paper: 200-80)
  dropout: float = 0.0          # dropout rate after each hidden layer (training only)
  dense_transform: str = 'log1p'  # dense value transform before embedding: 'log1p' | 'none'
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'dense_transform': ('log1p', 'none')}

  def check(self) -> None:
    if self.embed_dim <= 0:
      raise ValueError(f'embed_dim={self.embed_dim} must be positive; set embed_dim >= 1.')
    if any(w <= 0 for w in (*self.hidden, *self.att_hidden)):
      raise ValueError(f'hidden={self.hidden} / att_hidden={self.att_hidden} has a non-positive '
                       'width; make every width >= 1.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'dropout={self.dropout} must lie in [0, 1); set a rate such as 0.1.')

  def attended(self) -> tuple:
    """Indices of the sequence fields with a candidate (a shared categorical field)."""
    return tuple(f for f, s in enumerate(self.seq_share) if s >= 0)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim,
                                self.embed_dim, 'field', dense_transform=self.dense_transform,
                                dtype=self.dtype, seq_share=self.seq_share, keep_sequences=True,
                                name='tokenizer')(batch)
    parts = [emb.reshape(emb.shape[0], -1)]  # [B, F*E], sequences pooled
    seq_emb, seq_mask = aux.pop('seq_emb', None), aux.pop('seq_mask', None)
    fields = self.attended()
    if fields:
      b, _, length, e = seq_emb.shape
      keys = seq_emb[:, fields].transpose(0, 2, 1, 3).reshape(b, length, len(fields) * e)
      query = emb[:, [self.num_dense + self.seq_share[f] for f in fields]].reshape(b, -1)
      mask = jnp.any(seq_mask[:, fields], axis=1)  # [B, L] aligned histories
      interest, _ = TargetAttention(self.att_hidden, self.att_softmax, self.dtype,
                                    name='attention')(keys.astype(self.dtype), query, mask)
      parts.append(interest)
    x = jnp.concatenate(parts, axis=-1)
    for i, width in enumerate(self.hidden):
      x = PReLU(name=f'prelu_{i}')(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logit = nn.Dense(1, dtype=jnp.float32, name='logit')(x)[..., 0]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    f, e, d = len(self.vocab_sizes) + self.num_dense, self.embed_dim, len(self.attended()) * self.embed_dim
    widths = (f * e + d, *self.hidden, 1)
    parts = {f'dense_{i}' if i < len(self.hidden) else 'logit': flops.dense(a, b)
             for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))}
    if d:
      parts['attention'] = TargetAttention(self.att_hidden, parent=None).flops(self.seq_len, d)
    return flops.total(parts)
