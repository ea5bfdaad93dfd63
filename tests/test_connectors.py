"""Residual connectors against an independent transcription of the AttnRes equations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.models import connectors


def _rms(x):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)


def _reference_block_attnres(emb, sublayers, queries, block_size, weights='softmax'):
  """Block AttnRes as in the AttnRes README pseudocode (lists of blocks, partial sums)."""
  blocks, partial = [emb], None
  for j, (f, w) in enumerate(zip(sublayers, queries)):
    v = np.stack(blocks + ([partial] if partial is not None else []))  # [N, B, T, D]
    s = np.einsum('d,nbtd->nbt', w, _rms(v))
    if weights == 'softmax':
      a = np.exp(s - s.max(0)) / np.exp(s - s.max(0)).sum(0)
    else:  # silu / number of sources
      a = s / (1 + np.exp(-s)) / v.shape[0]
    h = np.einsum('nbt,nbtd->btd', a, v)
    out = f(h)
    partial = out if partial is None else partial + out
    if (j + 1) % block_size == 0:
      blocks.append(partial)
      partial = None
  return blocks, partial


def _run_connector(kind, emb, sublayers, queries, block_size, weights, stacked=True, **kw):
  units = len(sublayers)
  state = connectors.init_state(kind, jnp.asarray(emb), units, block_size, stacked=stacked)
  for j, (f, w) in enumerate(zip(sublayers, queries)):
    conn = connectors.Connector(kind=kind, width=emb.shape[-1], num_units=units,
                                block_size=block_size, depth_weights=weights, **kw)
    params = {'params': {'query': jnp.asarray(w)}}
    if kind == 'deres':
      params['params']['gate'] = jnp.zeros(emb.shape[-1])
    u = conn.apply(params, state, j)
    state = connectors.update_state(state, jnp.asarray(f(np.asarray(u))), j, block_size)
  return state


@pytest.mark.parametrize('stacked', [True, False])  # scan buffer + mask, or unrolled list
@pytest.mark.parametrize('block_size', [1, 2, 3])
@pytest.mark.parametrize('weights', ['softmax', 'silu'])
def test_block_attnres_matches_reference(block_size, weights, stacked):
  rng = np.random.default_rng(0)
  b, t, d, units = 3, 4, 8, 6
  emb = rng.normal(size=(b, t, d)).astype(np.float32)
  mats = [rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d) for _ in range(units)]
  sublayers = [lambda x, m=m: np.tanh(x @ m) for m in mats]
  queries = [rng.normal(size=d).astype(np.float32) for _ in range(units)]  # non-zero: a real test
  blocks, partial = _reference_block_attnres(emb, sublayers, queries, block_size, weights)
  state = _run_connector('attnres', emb, sublayers, queries, block_size, weights, stacked)
  expect = blocks + ([partial] if partial is not None else [])
  got = state['src'] if stacked else jnp.stack(state['srcs'])
  np.testing.assert_allclose(np.asarray(got), np.stack(expect), rtol=2e-5, atol=2e-5)


def test_full_attnres_is_block_size_one_and_eq_2_to_4():
  """Full AttnRes (Eqs. 2-4): h_l = sum_i softmax_i(w_l . RMSNorm(v_i)) v_i over v_0 = emb, f_1..f_{l-1}."""
  rng = np.random.default_rng(1)
  b, t, d, units = 2, 3, 8, 5
  emb = rng.normal(size=(b, t, d)).astype(np.float32)
  mats = [rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d) for _ in range(units)]
  queries = [rng.normal(size=d).astype(np.float32) for _ in range(units)]
  values, inputs = [emb], []
  for m, w in zip(mats, queries):
    v = np.stack(values)
    s = np.einsum('d,nbtd->nbt', w, _rms(v))
    a = np.exp(s) / np.exp(s).sum(0)
    inputs.append(np.einsum('nbt,nbtd->btd', a, v))
    values.append(np.tanh(inputs[-1] @ m))
  seen = []
  sublayers = [lambda x, m=m: (seen.append(x), np.tanh(x @ m))[1] for m in mats]
  _run_connector('attnres', emb, sublayers, queries, 1, 'softmax')
  for got, want in zip(seen, inputs):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize('n_valid', [1, 3, 5])
def test_softmax_depth_weights_sum_to_one_over_visible_sources(n_valid):
  scores = jax.random.normal(jax.random.PRNGKey(0), (5, 2, 3))
  mask = jnp.arange(5) < n_valid
  a = connectors.depth_weights(scores, mask, 'softmax', 'none')
  np.testing.assert_allclose(a.sum(0), 1.0, rtol=1e-6)
  assert float(jnp.abs(a[n_valid:]).max(initial=0.0)) == 0.0  # invisible sources get nothing


def test_silu_weights_can_be_negative_and_are_scaled_by_sources():
  scores = jnp.array([-1.2785, 0.0, 2.0])[:, None, None]
  a = connectors.depth_weights(scores, jnp.ones(3, bool), 'silu', 'num_sources')
  np.testing.assert_allclose(np.asarray(a)[:, 0, 0] * 3, jax.nn.silu(scores)[:, 0, 0], rtol=1e-6)
  assert float(a[0, 0, 0]) < -0.09  # "forgetting": SiLU's minimum is about -0.2785


def test_source_mask_partial_block():
  # block_size 2: unit 0 sees the embedding; unit 1 also the partial block; unit 2 the completed block.
  masks = [np.asarray(connectors.source_mask(j, 4, 2)) for j in range(5)]
  assert [m.sum() for m in masks] == [1, 2, 2, 3, 3]


@pytest.mark.parametrize('kind,norm', [('softmax', 'none'), ('silu', 'num_sources'),
                                       ('sigmoid', 'none')])
def test_list_depth_weights_equal_stacked(kind, norm):
  """The unrolled path's per-source weights equal the scan path's stacked, masked ones."""
  scores = 3 * jax.random.normal(jax.random.PRNGKey(2), (4, 2, 3))
  stacked = connectors.depth_weights(scores, jnp.ones(4, bool), kind, norm)
  listed = connectors.depth_weights_list(list(scores), kind, norm)
  np.testing.assert_allclose(np.stack(listed), stacked, rtol=1e-6, atol=1e-7)
