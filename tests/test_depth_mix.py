"""models/depth_mix.py: the fused depth attention equals the reference path, values and gradients."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.models import depth_mix as dm

T, B, D, N = 3, 5, 7, 4   # odd sizes


def _inputs(seed, query, gate, dtype=jnp.float32):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  srcs = jax.random.normal(k[0], (N, T, B, D)).astype(dtype)
  w = jax.random.normal(k[1], (D,) if query == 'shared' else (T, D))
  h = jax.random.normal(k[2], (T, B, D)).astype(dtype)
  theta = {'vector': jax.random.normal(k[3], (D,)), 'scalar': jnp.array([0.3]), 'none': None}[gate]
  return srcs, w, h, theta


def _loss(fn, mask, opts):
  """A scalar of u with a fixed random cotangent; rinv is computed from the sources (as the connector does)."""
  cot = jax.random.normal(jax.random.PRNGKey(9), (T, B, D))

  def f(srcs, w, h, theta):
    rinvs = [jax.lax.rsqrt(jnp.mean(v.astype(jnp.float32) ** 2, -1) + 1e-6) for v in srcs]
    u = fn(list(srcs), rinvs, w, h, theta, mask, **opts)
    return jnp.sum(u.astype(jnp.float32) * cot)
  return f


CASES = list(itertools.product(['softmax', 'silu', 'sigmoid'], ['none', 'add', 'convex'], ['vector', 'scalar', 'none'],
                               ['shared', 'token'], [True, False], [None, (True, True, True, False)]))
# A spread of the 324 combinations (every value of every option appears), plus the convex merge with
# masked sources and per-token queries for each weight kind.
CASES = [c for i, c in enumerate(CASES)
         if i % 19 == 0 or (c[1] == 'convex' and c[2] == 'vector' and c[3] == 'token' and c[4] and c[5])]


@pytest.mark.parametrize('weights,merge,gate,query,key_norm,mask', CASES)
def test_fused_equals_reference(weights, merge, gate, query, key_norm, mask):
  if merge == 'none' and gate != 'none':
    gate = 'none'
  srcs, w, h, theta = _inputs(0, query, gate)
  mask = None if mask is None else jnp.array(mask)
  opts = dict(weights=weights, pointwise_norm='num_sources', key_norm=key_norm, merge=merge)
  ref = _loss(dm.depth_mix, mask, opts)
  fused = _loss(dm.depth_mix_fused, mask, opts)
  args = (srcs, w, h, theta)
  np.testing.assert_allclose(fused(*args), ref(*args), rtol=1e-5)
  argnums = (0, 1, 2) if theta is None else (0, 1, 2, 3)
  g_ref = jax.jit(jax.grad(ref, argnums))(*args)
  g_fused = jax.jit(jax.grad(fused, argnums))(*args)
  for name, a, b in zip(('srcs', 'w', 'h', 'theta'), g_fused, g_ref):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name)


def test_masked_sources_get_no_gradient_and_no_weight():
  srcs, w, h, theta = _inputs(1, 'shared', 'vector')
  mask = jnp.array([True, True, False, False])
  opts = dict(weights='silu', pointwise_norm='num_sources', key_norm=True, merge='add')
  f = _loss(dm.depth_mix_fused, mask, opts)
  g = jax.grad(f)(srcs, w, h, theta)
  assert float(jnp.abs(g[2:]).max()) == 0.0 and float(jnp.abs(g[:2]).max()) > 0
  # Two visible sources: the same value as a call that only sees those two.
  rinvs = [jax.lax.rsqrt(jnp.mean(v ** 2, -1) + 1e-6) for v in srcs]
  np.testing.assert_allclose(dm.depth_mix_fused(list(srcs), rinvs, w, h, theta, mask, **opts),
                             dm.depth_mix(list(srcs[:2]), rinvs[:2], w, h, theta, **opts), rtol=1e-5, atol=1e-6)


def test_bfloat16_within_tolerance():
  srcs, w, h, theta = _inputs(2, 'shared', 'vector', jnp.bfloat16)
  opts = dict(weights='silu', pointwise_norm='num_sources', key_norm=True, merge='convex')
  ref = _loss(dm.depth_mix, None, opts)
  fused = _loss(dm.depth_mix_fused, None, opts)
  ga, gb = jax.grad(fused)(srcs, w, h, theta), jax.grad(ref)(srcs, w, h, theta)
  np.testing.assert_allclose(np.asarray(ga, np.float32), np.asarray(gb, np.float32), rtol=5e-2, atol=5e-2)


def test_impl_choice():
  assert dm.use_fused('fused') and not dm.use_fused('reference')
  assert dm.use_fused('auto') == (jax.default_backend() in ('gpu', 'tpu'))
  with pytest.raises(ValueError, match="'auto', 'fused' or 'reference'"):
    dm.use_fused('pallas')


# DeRes with either merge; AttnRes's path (merge 'none') is the same code with no stream (covered above).
@pytest.mark.parametrize('connector,merge,gate', [('deres', 'add', 'vector'), ('deres', 'gated', 'scalar')])
def test_model_with_the_fused_path_equals_the_reference_path(connector, merge, gate):
  """The whole Transformer (unrolled, depth 3, block size 2) with depth_mix='fused' vs 'reference'."""
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.data.schema import Schema  # pylint: disable=g-import-not-at-top
  schema = Schema(dense_names=('d0',), cat_names=('c0', 'c1', 'c2'), vocab_sizes=(7, 11, 5))
  rng = np.random.default_rng(0)
  batch = {'dense': rng.normal(size=(6, 1)).astype(np.float32),
           'cat': np.stack([rng.integers(0, v, 6) for v in schema.vocab_sizes], 1).astype(np.int32),
           'label': rng.integers(0, 2, 6).astype(np.float32)}
  out = {}
  for impl in ('reference', 'fused'):
    cfg = models.model_config('transformer', connector=connector, depth=3, width=8, num_heads=2, embed_dim=8,
                              block_size=2, merge=merge, gate=gate, gate_init=0.7, query_init_scale=1.0,
                              head_hidden=(8,), depth_mix=impl)
    model = models.build(cfg, schema)
    params = model.init(jax.random.PRNGKey(0), batch)['params']

    def loss(p):
      logits, _ = model.apply({'params': p}, batch)
      return jnp.mean(jax.nn.softplus(logits.ravel()) - batch['label'] * logits.ravel())
    out[impl] = jax.jit(jax.value_and_grad(loss))(params)
  np.testing.assert_allclose(out['fused'][0], out['reference'][0], rtol=1e-6)
  for a, b in zip(jax.tree.leaves(out['fused'][1]), jax.tree.leaves(out['reference'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
