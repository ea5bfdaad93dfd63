"""Logistic regression: the first-order baseline every CTR table starts from.

logit = bias + sum_f w_f[id_f] + sum_k (a_k * t(x_k) + m_k * missing_k), with one weight per
categorical value (OOV row 0 included) and t the same dense transform as the tokenizer.
It sees no feature interactions, so on the synthetic data its gap to the oracle measures
how much of the signal is pairwise or higher-order.
"""
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models.tokenizer import VOCAB, lookup, seq_layout


class LogisticRegression(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|); or 'none'
  table_pad: int = 8

  CHOICES: ClassVar[dict] = {'dense_transform': ('log1p', 'none')}

  def check(self):
    """Nothing can be combined wrongly: logistic regression has one field."""

  def flops_per_example(self) -> dict:
    # Elementwise work is all there is, counted op by op as written in __call__: per dense
    # field isnan, where, sign, abs, log1p, a product, weight product, select and the sum's add
    # (9); per categorical field two range compares, or, where, offset add, the sum's add and
    # the squared norm's square and add (8), plus jnp.take's out-of-bounds fill (two compares,
    # an and and two selects: 5); the bias (1).
    return flops_lib.total({'dense': 9 * self.num_dense, 'categorical': 13 * len(self.vocab_sizes),
                            'bias': 1})

  @nn.compact
  def __call__(self, batch, train: bool = False):
    n = next(batch[k] for k in ('cat', 'seq', 'dense') if k in batch).shape[0]
    logit = jnp.full((n,), self.param('bias', nn.initializers.zeros, (), jnp.float32))
    embed_sq = jnp.zeros_like(logit)
    if self.num_dense:
      x = batch['dense'].astype(jnp.float32)
      missing = jnp.isnan(x)
      x = jnp.where(missing, 0.0, x)
      if self.dense_transform == 'log1p':
        x = jnp.sign(x) * jnp.log1p(jnp.abs(x))
      a = self.param('dense_weight', nn.initializers.zeros, (self.num_dense,), jnp.float32)
      m = self.param('dense_missing', nn.initializers.zeros, (self.num_dense,), jnp.float32)
      logit = logit + jnp.sum(jnp.where(missing, m, x * a), axis=-1)
    if self.vocab_sizes:
      _, _, total = seq_layout(self.vocab_sizes, self.seq_share, self.table_pad)
      table = self.param('embedding', nn.with_logical_partitioning(
          nn.initializers.zeros, (VOCAB, layers.EMBED)), (total, 1), jnp.float32)
      # A sequence field adds the mean weight of its items (its pooled view, tokenizer.py).
      w = lookup(table, batch, self.vocab_sizes, self.seq_share, self.table_pad)[0][..., 0]  # [B, F]
      logit = logit + jnp.sum(w, axis=-1)
      embed_sq = jnp.sum(jnp.square(w), axis=-1)
    return logit, {'embed_sq': embed_sq}
