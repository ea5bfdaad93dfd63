"""Wukong (Zhang et al., ICML 2024, arXiv 2403.02545): a stack of factorization machines.

X_0 is the [n_0, d] matrix of field embeddings (n_0 = F, d = E). Layer i (i = 0 .. l-1):
  X_{i+1} = LN(concat(FMB(X_i), LCB(X_i)) + res(X_i))          ([n_F + n_L, d])            (1)
  FMB(X) = reshape(MLP(LN(flatten(FM(X)))), (n_F, d))            (factorization machine block) (2)
  FM(X)  = X (X^T Y)   ([n, k]; Y: [n, k] learned, the paper's low-rank "optimized FM");
           rank=0 gives the plain pairwise matrix X X^T ([n, n])                             (3)
  LCB(X) = W_L X       ([n_L, d]; W_L: [n_L, n] learned, linear compression block)          (4)
  res(X) = X if n = n_F + n_L, else W_R X  (W_R: [n_F + n_L, n], a learned linear map)       (5)
  logit  = MLP_head(flatten(X_l))                                                           (6)
Layer i sees interactions of order 1 .. 2^i: the FM squares its input's order, the LCB and
the residual keep the lower orders.

Reconstruction choices (the paper leaves them open or differs from this library):
- the FMB MLP has ReLU hidden layers and a linear output layer (FuxiCTR adds a ReLU there);
- LN in Eq. 1 normalises each embedding over d; the LN in Eq. 2 the flattened FM output;
- Y in Eq. 3 is a parameter (not input-dependent); dense features go through the shared
  tokenizer, not Wukong's dense-feature MLP; Eq. 5 applies only when the counts differ.
Defaults follow the public-dataset setting of the paper as reimplemented by
clabrugere/wukong-recommendation (3 layers, n_F = n_L = 16, k = 24, MLPs 512-512) at d = 16.
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import flops
from deres_jax.models.tokenizer import FeatureTokenizer

# LayerNorm FLOPs per normalised element (mean, centre, square, mean, rsqrt scale, gain, bias),
# counted because at small n_F, n_L and d the norms are a large share of the work.
LAYER_NORM_FLOPS = 7


class WukongLayer(nn.Module):
  """One interaction layer, Eqs. 1-5: [B, n, d] -> [B, num_fmb + num_lcb, d]."""
  num_fmb: int                  # n_F
  num_lcb: int                  # n_L
  rank: int                     # k (0: full X X^T)
  fmb_hidden: tuple             # hidden widths of the FMB's MLP
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, n, d = x.shape
    init = nn.initializers.lecun_normal()  # fan-in n: the field axis being recombined
    if self.rank:  # Eq. 3, X^T Y first: O(n d k) instead of O(n^2 d)
      y = self.param('fm_proj', init, (n, self.rank), jnp.float32).astype(self.dtype)
      fm = jnp.einsum('bnd,bdk->bnk', x, jnp.einsum('bnd,nk->bdk', x, y))  # [B, n, k]
    else:
      fm = jnp.einsum('bnd,bmd->bnm', x, x)  # [B, n, n]
    self.sow('intermediates', 'fm', fm)
    h = nn.LayerNorm(dtype=self.dtype, name='fmb_norm')(fm.reshape(b, -1))
    for j, width in enumerate(self.fmb_hidden):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'fmb_{j}')(h))
    fmb = nn.Dense(self.num_fmb * d, dtype=self.dtype, name='fmb_out')(h).reshape(b, -1, d)
    w_l = self.param('lcb', init, (n, self.num_lcb), jnp.float32).astype(self.dtype)
    lcb = jnp.einsum('bnd,nl->bld', x, w_l)  # [B, n_L, d], Eq. 4
    self.sow('intermediates', 'lcb', lcb)
    out = jnp.concatenate([fmb, lcb], axis=1)  # [B, n_F + n_L, d]
    res = x
    if n != out.shape[1]:  # Eq. 5
      w_r = self.param('res_proj', init, (n, out.shape[1]), jnp.float32).astype(self.dtype)
      res = jnp.einsum('bnd,nm->bmd', x, w_r)
    return nn.LayerNorm(dtype=self.dtype, name='norm')(out + res)


class Wukong(nn.Module):
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields (each embedded like the Transformer's)
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  embed_dim: int = 16           # d = E: per-field embedding size
  num_layers: int = 3           # l: Wukong layers (layer i reaches interaction order 2^i)
  num_fmb: int = 16             # n_F: embeddings produced by each FMB
  num_lcb: int = 16             # n_L: embeddings produced by each LCB
  rank: int = 24                # k of the low-rank FM X X^T Y; 0 = the full [n, n] matrix X X^T
  fmb_hidden: tuple = (512, 512)  # hidden ReLU widths of each FMB's MLP (output n_F * d, linear)
  head_hidden: tuple = (512, 512)  # hidden ReLU widths of the top MLP on flatten(X_l)
  dense_transform: str = 'log1p'  # dense value transform before embedding: 'log1p' | 'none'
  dtype: Any = jnp.float32      # computation dtype

  CHOICES: ClassVar[dict] = {'dense_transform': ('log1p', 'none')}

  def check(self) -> None:
    for field in ('embed_dim', 'num_layers', 'num_fmb', 'num_lcb'):
      if getattr(self, field) <= 0:
        raise ValueError(f'{field}={getattr(self, field)} must be positive; set it to >= 1.')
    if self.rank < 0:
      raise ValueError(f'rank={self.rank} must be >= 0 (0 = full FM matrix X X^T).')
    for field in ('fmb_hidden', 'head_hidden'):
      if any(w <= 0 for w in getattr(self, field)):
        raise ValueError(f'{field}={getattr(self, field)} has a non-positive width; '
                         'make every width >= 1.')

  @nn.compact
  def __call__(self, batch, train: bool = False):
    x, aux = FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim,
                              self.embed_dim, 'field', dense_transform=self.dense_transform,
                              dtype=self.dtype, seq_share=self.seq_share, name='tokenizer')(batch)  # [B, F, E]
    for i in range(self.num_layers):
      x = WukongLayer(self.num_fmb, self.num_lcb, self.rank, self.fmb_hidden,
                      dtype=self.dtype, name=f'layer_{i}')(x)  # [B, n_F + n_L, E]
    h = x.reshape(x.shape[0], -1)
    for j, width in enumerate(self.head_hidden):
      h = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'head_{j}')(h))
    return nn.Dense(1, dtype=jnp.float32, name='logit')(h)[..., 0].astype(jnp.float32), aux

  def flops_per_example(self) -> dict:
    n, d, k = len(self.vocab_sizes) + self.num_dense, self.embed_dim, self.rank
    n_out = self.num_fmb + self.num_lcb
    parts = dict.fromkeys(('fm', 'fmb_mlp', 'lcb', 'residual', 'norm', 'head'), 0)
    for _ in range(self.num_layers):
      parts['fm'] += 2 * flops.dense(n, k, tokens=d) if k else flops.dense(d, n, tokens=n)
      widths = (n * (k or n), *self.fmb_hidden, self.num_fmb * d)
      parts['fmb_mlp'] += sum(flops.dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
      parts['lcb'] += flops.dense(n, self.num_lcb, tokens=d)
      parts['residual'] += flops.dense(n, n_out, tokens=d) if n != n_out else 0
      parts['norm'] += LAYER_NORM_FLOPS * (n * (k or n) + n_out * d)  # Eqs. 2 and 1
      n = n_out
    widths = (n * d, *self.head_hidden, 1)
    parts['head'] = sum(flops.dense(a, b) for a, b in zip(widths[:-1], widths[1:]))
    return flops.total(parts)
