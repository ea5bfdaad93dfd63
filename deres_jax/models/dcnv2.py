"""DCNv2 (Wang et al., WWW 2021): cross network + deep network over concatenated embeddings.

  x_0 = [e_1; ...; e_F]                                  (field embeddings, [B, F*E])
  x_{l+1} = x_0 * (W_l x_l + b_l) + x_l                  (full-rank cross layer, Eq. 1)
  logit = w^T [x_L ; DNN(x_0)] + b                       ('parallel' structure)
or, with structure='stacked', logit = w^T DNN(x_L) + b.

Used as a baseline and for the FuxiCTR throughput comparison (benchmarks/compare_fuxictr.py),
so its layer sizes follow FuxiCTR's DCNv2 (embedding 16, 3 cross layers, DNN 400-400-400).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import flops as flops_lib
from deres_jax.models.tokenizer import FeatureTokenizer


class DCNv2(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields (each embedded like the Transformer's)
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  embed_dim: int = 16           # E: embedding size of every field
  num_cross: int = 3            # cross layers (0 = a plain DNN)
  dnn_hidden: tuple = (400, 400, 400)  # hidden sizes of the deep tower
  structure: str = 'parallel'   # 'parallel': [cross; DNN(x_0)] -> logit; 'stacked': DNN(cross(x_0))
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'structure': ('parallel', 'stacked'),
                             'dense_transform': ('log1p', 'none')}

  def check(self):
    if self.structure == 'stacked' and not self.dnn_hidden:
      raise ValueError("structure='stacked' needs a deep tower: set dnn_hidden.")
    if any(w <= 0 for w in self.dnn_hidden):
      raise ValueError(f'dnn_hidden={self.dnn_hidden} must hold positive sizes.')

  def flops_per_example(self) -> dict:
    x = (self.num_dense + len(self.vocab_sizes)) * self.embed_dim
    dims = (x,) + tuple(self.dnn_hidden)
    deep = sum(flops_lib.dense(a, b) for a, b in zip(dims[:-1], dims[1:]))
    out = x + dims[-1] if self.structure == 'parallel' else dims[-1]
    return flops_lib.total({'cross': self.num_cross * flops_lib.dense(x, x), 'dnn': deep,
                            'logit': flops_lib.dense(out, 1)})

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim,
                                self.embed_dim, 'field', dense_transform=self.dense_transform,
                                dtype=self.dtype, seq_share=self.seq_share, name='tokenizer')(batch)
    x0 = emb.reshape(emb.shape[0], -1)  # [B, F*E]
    x = x0
    for i in range(self.num_cross):
      x = x0 * nn.Dense(x0.shape[-1], dtype=self.dtype, name=f'cross_{i}')(x) + x
    deep = x0 if self.structure == 'parallel' else x
    for i, width in enumerate(self.dnn_hidden):
      deep = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dnn_{i}')(deep))
    out = jnp.concatenate([x, deep], -1) if self.structure == 'parallel' else deep
    return nn.Dense(1, dtype=jnp.float32, name='logit')(out)[..., 0].astype(jnp.float32), aux
