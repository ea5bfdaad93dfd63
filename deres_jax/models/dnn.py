"""DNN: a plain ReLU MLP over the concatenated field embeddings (FuxiCTR's DNN, DLRM's top MLP).

  x_0 = [e_1; ...; e_F]                       (field embeddings from the shared tokenizer, [B, F*E])
  x_{l+1} = Dropout(ReLU(W_l x_l + b_l))      (l = 0 .. L-1, widths `hidden`)
  logit = w^T x_L + b

The baseline every interaction model must beat: it sees feature interactions only
implicitly, through the MLP. FuxiCTR's DNN has the same form (its optional BatchNorm is
left out: the training step keeps parameters only, no batch statistics). Default widths
400-400-400 as in the DCNv2 baseline here (FuxiCTR's template uses 500-500-500 at E=40).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import flops
from deres_jax.models.tokenizer import FeatureTokenizer


class DNN(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields (each embedded like the Transformer's)
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  embed_dim: int = 16           # E: per-field embedding size
  hidden: tuple = (400, 400, 400)  # widths of the ReLU hidden layers
  dropout: float = 0.0          # dropout rate after each hidden layer (training only)
  dense_transform: str = 'log1p'  # dense value transform before embedding: 'log1p' | 'none'
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'dense_transform': ('log1p', 'none')}

  def check(self) -> None:
    if self.embed_dim <= 0:
      raise ValueError(f'embed_dim={self.embed_dim} must be positive; set embed_dim >= 1.')
    if any(w <= 0 for w in self.hidden):
      raise ValueError(f'hidden={self.hidden} has a non-positive width; make every width >= 1.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'dropout={self.dropout} must lie in [0, 1); set a rate such as 0.1.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim,
                                self.embed_dim, 'field', dense_transform=self.dense_transform,
                                dtype=self.dtype, seq_share=self.seq_share, name='tokenizer')(batch)
    x = emb.reshape(emb.shape[0], -1)  # [B, F*E]
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))  # [B, width]
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logit = nn.Dense(1, dtype=jnp.float32, name='logit')(x)[..., 0]  # [B]
    return logit.astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    widths = ((len(self.vocab_sizes) + self.num_dense) * self.embed_dim, *self.hidden, 1)
    return flops.total({f'dense_{i}' if i < len(self.hidden) else 'logit': flops.dense(a, b)
                        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))})
