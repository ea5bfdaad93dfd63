"""Single-stream residual connectors: one residual stream h, updated by each unit's output f_j.

Same interface as every connector of connectors.py (init_state, __call__, update, output,
flops); connectors.py has the full docstring and re-exports every class here. h is the
residual stream, f_j the output of unit j:

* 'prenorm'     h_{j+1} = h_j + f_j(Norm(h_j)): the identity skip.
* 'rezero'      h_{j+1} = h_j + alpha_j f_j, alpha_j a scalar initialised to 0 (Bachlechner et
                al. 2020): the network starts as the identity map.
* 'layerscale'  h_{j+1} = h_j + diag(lambda_j) f_j, lambda_j in R^D (CaiT, Touvron et al. 2021).
* 'highway'     h_{j+1} = (1 - g) h_j + g f_j, g = sigmoid(W Norm(h_j) + b) in (0,1)^D
                (Srivastava et al. 2015; AttnRes Table 5).
* MatrixResidual (DeRes identity='matrix', research/deres.md §9): h_{j+1} = h_j M_j + f_j with a
                learnable residual matrix M_j in R^{D x D}, M_j = I at init.
* 'denseformer' DenseFormer depth-weighted averaging (Pagliardini et al. 2024): after unit j
                the stream is h = sum_{i<=j+1} w_{j,i} X_i over X_0 = emb and the units' outputs
                X_i = h + f (weights initialised one-hot on the newest: Pre-Norm). Needs a
                static j (unrolled blocks).

ReZero, LayerScale, Highway and MatrixResidual also serve as DeRes's learnable identity path
(its `identity` field, ablation A9).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import flops as flops_lib
from deres_jax.models import layers


class PreNorm(nn.Module):
  """The identity skip: u_j = h_j,  h_{j+1} = h_j + f_j."""
  num_units: int = 1            # U

  def init_state(self, emb, stacked: bool = False):
    del stacked
    return {'h': emb}

  def __call__(self, state, j):
    return state['h']

  def update(self, state, out, j):
    return dict(state, h=state['h'] + out)

  def output(self, state):
    return state['h']

  def flops(self, t: int, d: int, j: int) -> int:
    return 0  # elementwise work is not counted (flops.py)


class ReZero(PreNorm):
  """h_{j+1} = h_j + alpha_j f_j with a learnable scalar alpha_j = 0 at init (identity map)."""

  def setup(self):
    self.alpha = self.param('alpha', nn.initializers.zeros, (), jnp.float32)

  def update(self, state, out, j):
    return dict(state, h=state['h'] + self.alpha.astype(out.dtype) * out)


class LayerScale(PreNorm):
  """h_{j+1} = h_j + diag(lambda_j) f_j, lambda_j in R^D initialised to `layerscale_init`."""
  width: int = 64               # D
  layerscale_init: float = 0.1  # CaiT: 0.1 up to depth 18, smaller for deeper networks

  def setup(self):
    self.scale = self.param('scale', nn.initializers.constant(self.layerscale_init),
                            (self.width,), jnp.float32)

  def update(self, state, out, j):
    return dict(state, h=state['h'] + self.scale.astype(out.dtype) * out)


class MatrixResidual(PreNorm):
  """h_{j+1} = h_j M_j + f_j with a learnable residual matrix M_j in R^{D x D}, M_j = I at init.

  The matrix-valued learnable residual of the DeRes ablation (research/deres.md §9: the paper's
  "learnable residual matrices" are HC/mHC-style maps, not scalars): one map per unit acting on
  the hidden dimension, so products of them over depth can attenuate the stream, which the
  identity skip cannot. At init it is Pre-Norm exactly.
  """
  width: int = 64               # D

  def setup(self):
    self.matrix = self.param('matrix', lambda _, shape: jnp.eye(shape[0], dtype=jnp.float32),
                             (self.width, self.width))

  def update(self, state, out, j):
    h = state['h']
    return dict(state, h=h @ self.matrix.astype(h.dtype) + out)

  def flops(self, t: int, d: int, j: int) -> int:
    return flops_lib.dense(d, d, t) if j < self.num_units else 0


class Highway(PreNorm):
  """h_{j+1} = (1 - g) h_j + g f_j with g = sigmoid(W RMSNorm(h_j) + b) in (0,1)^D per token.

  The gate reads the RMS-normalised stream (its raw scale grows with depth under Pre-Norm);
  b starts at `highway_bias` < 0 so the layer starts mostly carrying h (Srivastava et al.).
  """
  width: int = 64               # D
  highway_bias: float = -2.0    # initial gate bias: sigmoid(-2) = 0.12

  def setup(self):
    self.gate = nn.Dense(self.width, bias_init=nn.initializers.constant(self.highway_bias))

  def update(self, state, out, j):
    h = state['h']
    g = jax.nn.sigmoid(self.gate(layers.rms_normalize(h)))
    return dict(state, h=h + g * (out - h))

  def flops(self, t: int, d: int, j: int) -> int:
    return flops_lib.dense(d, d, t) if j < self.num_units else 0


class DenseFormer(PreNorm):
  """Depth-weighted averaging: X_{j+1} = h_j + f_j, h_{j+1} = sum_{i=0}^{j+1} w_{j,i} X_i.

  One weight vector per unit (j + 2 scalars), initialised one-hot on X_{j+1}: Pre-Norm.
  The X_i are a Python list, so this connector needs a static j (unrolled blocks).
  """

  index: int = 0                # this unit's index j (static): j + 2 weights

  def setup(self):
    self.w = self.param('dwa', lambda _: jnp.zeros(self.index + 2).at[-1].set(1.0))

  def init_state(self, emb, stacked: bool = False):
    del stacked
    return {'h': emb, 'xs': [emb]}

  def update(self, state, out, j):
    xs = list(state['xs']) + [state['h'] + out]
    h = sum(self.w[i].astype(x.dtype) * x for i, x in enumerate(xs))
    return dict(state, h=h, xs=xs)

  def flops(self, t: int, d: int, j: int) -> int:
    return 0 if j >= self.num_units else 2 * (j + 2) * t * d
