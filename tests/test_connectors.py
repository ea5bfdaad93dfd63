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


# ------------------------------------------------------------------ DeRes against NumPy, and the zoo.


def _silu(x):
  return x / (1 + np.exp(-x))


def _reference_deres(emb, sublayers, queries, thetas, block_size, merge, value):
  """DeRes as in research/deres.md §7.2: identity stream h, Block AttnRes path a with SiLU/N
  weights over [b_0 = emb, completed blocks, partial block], u = h + g a or g h + (1 - g) a.
  Returns the inputs of every unit and of the output (j = U)."""
  h, blocks, partial, inputs = emb, [emb], None, []
  for j in range(len(sublayers) + 1):
    v = np.stack(blocks + ([partial] if partial is not None else []))  # [N, T, B, D]
    s = np.einsum('d,ntbd->ntb', queries[j], _rms(v))
    a = np.einsum('ntb,ntbd->tbd', _silu(s) / v.shape[0], v)
    g = 1 / (1 + np.exp(-thetas[j]))
    inputs.append(h + g * a if merge == 'add' else g * h + (1 - g) * a)
    if j == len(sublayers):
      break
    out = sublayers[j](inputs[-1])
    h = h + out
    if value == 'output':  # b_n = sum of the block's outputs
      partial = out if partial is None else partial + out
    else:                  # the stream at the block's end
      partial = h
    if (j + 1) % block_size == 0:
      blocks.append(partial)
      partial = None
  return inputs


def _run_units(kind, emb, sublayers, params, stacked=False, **kw):
  """Unit inputs (and the output's) of connector `kind` driven through its own interface."""
  units, d = len(sublayers), emb.shape[-1]
  fields = dict(width=d, num_units=units, **kw)
  state = connectors.make(kind, parent=None, **fields).init_state(jnp.asarray(emb), stacked=stacked)
  inputs = []
  for j in range(units + 1):
    conn = connectors.make(kind, index=j, **fields)
    p = {'params': params[j]} if params[j] else {}
    if j == units:  # as the backbone: an unbound instance unless the output has parameters
      out = conn.apply(p, state, method='output') if p else connectors.make(
          kind, parent=None, **fields).output(state)
      inputs.append(np.asarray(out))
      break
    inputs.append(np.asarray(conn.apply(p, state, j)))
    out = jnp.asarray(sublayers[j](inputs[-1]))
    state = conn.apply(p, state, out, j, method='update')
  return inputs


def _random_units(seed, t=3, b=2, d=8, units=6):
  """Random embedding and sublayers f_j(x) = tanh(RMSNorm(x) M_j) (the backbone's pre-norm)."""
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(t, b, d)).astype(np.float32)
  mats = [rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d) for _ in range(units)]
  return rng, emb, [lambda x, m=m: np.tanh(_rms(x) @ m) for m in mats]


@pytest.mark.parametrize('stacked', [False, True])
@pytest.mark.parametrize('block_size', [1, 2, 3, 4])
@pytest.mark.parametrize('value', ['output', 'hidden'])
@pytest.mark.parametrize('merge', ['add', 'gated'])
def test_deres_matches_numpy_transcription(merge, value, block_size, stacked):
  """Non-zero queries and gates: every unit's input and the output equal the NumPy equations."""
  rng, emb, sublayers = _random_units(block_size)
  d = emb.shape[-1]
  queries = [rng.normal(size=d).astype(np.float32) for _ in range(len(sublayers) + 1)]
  thetas = [rng.normal(size=d).astype(np.float32) for _ in range(len(sublayers) + 1)]
  want = _reference_deres(emb, sublayers, queries, thetas, block_size, merge, value)
  params = [{'query': jnp.asarray(q), 'gate': jnp.asarray(g)} for q, g in zip(queries, thetas)]
  got = _run_units('deres', emb, sublayers, params, stacked, block_size=block_size, merge=merge,
                   value=value)
  for j, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5, err_msg=f'unit {j}')


@pytest.mark.parametrize('block_size', [1, 2])
def test_attnres_only_ablation_is_attnres_with_silu(block_size):
  rng, emb, sublayers = _random_units(7)
  queries = [{'query': jnp.asarray(rng.normal(size=emb.shape[-1]), jnp.float32)}
             for _ in range(len(sublayers) + 1)]
  a = _run_units('deres', emb, sublayers, queries, block_size=block_size, paths='attnres')
  b = _run_units('attnres', emb, sublayers, queries, block_size=block_size, depth_weights='silu')
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
  # The ablation has exactly AttnRes's parameters (no gate, no identity-stream weights).
  conn = connectors.make('deres', width=8, num_units=6, paths='attnres')
  state = conn.init_state(jnp.asarray(emb))
  assert set(conn.init(jax.random.PRNGKey(0), state, 0)['params']) == {'query'}
  # A6: random pseudo-queries (the SiLU path is then not exactly 0 at init).
  conn = connectors.make('deres', width=8, num_units=6, paths='attnres', query_init_scale=1.0)
  q = conn.init(jax.random.PRNGKey(0), state, 0)['params']['query']
  assert 0.1 < float(jnp.std(q)) < 1.0 and float(jnp.abs(conn.apply({'params': {'query': q}},
                                                                    state, 0)).max()) > 0


def _name(path) -> str:
  return getattr(path[-1], 'key', '')


def _init_units(kind, emb, units, **kw):
  """Per-unit initial parameters of connector `kind` (index j = its unit) and the output's."""
  fields = dict(width=emb.shape[-1], num_units=units, **kw)
  state = connectors.make(kind, parent=None, **fields).init_state(jnp.asarray(emb))
  out = []
  for j in range(units + 1):
    v = connectors.make(kind, index=j, **fields).init(jax.random.PRNGKey(j), state, j)
    out.append(v.get('params', {}))
  return out


@pytest.mark.parametrize('kind,kw', [('hc', dict(dynamic=False)), ('hc', {}), ('mhc', {}),
                                     ('denseformer', {}), ('rezero', {})])
def test_connectors_start_as_prenorm_or_identity(kind, kw):
  """At init, HC (A_m = e_{j mod n}, A_r = I, B = 1), mHC (H^post = 1, doubly stochastic H^res
  on equal streams) and DenseFormer (one-hot weights on the newest state) feed every unit the
  Pre-Norm stream up to a positive factor, which the unit's RMSNorm removes; ReZero feeds the
  embedding to every unit (alpha = 0: the identity map)."""
  _, emb, sublayers = _random_units(5, units=5)
  params = _init_units(kind, emb, 5, **kw)
  got = _run_units(kind, emb, sublayers, params, **kw)
  want = (_run_units('prenorm', emb, sublayers, [{}] * 6) if kind != 'rezero'
          else [emb] * 6)
  for j, (g, w) in enumerate(zip(got, want)):
    np.testing.assert_allclose(_rms(g), _rms(w), rtol=1e-5, atol=1e-5, err_msg=f'unit {j}')
  # Not vacuous: moving the connector's parameters off their init changes the unit inputs.
  moved = jax.tree.map(lambda v: v + 0.3, params)
  got = _run_units(kind, emb, sublayers, moved, **kw)
  assert not np.allclose(_rms(got[-1]), _rms(want[-1]), atol=1e-3)


def test_mhc_mixing_matrices_are_doubly_stochastic():
  rng, emb, _ = _random_units(3)
  conn = connectors.make('mhc', width=emb.shape[-1], num_units=4)
  state = {'H': jnp.asarray(rng.normal(size=(4,) + emb.shape), jnp.float32)}  # distinct streams
  params = conn.init(jax.random.PRNGKey(0), state, 0)['params']
  # Trained-looking maps: input-dependent logits (phi ~ N(0, 1), alpha = 0.05) around b_res.
  params = dict(params, phi=jnp.asarray(rng.normal(size=params['phi'].shape), jnp.float32),
                alpha=jnp.full((3,), 0.05))
  _, inter = conn.apply({'params': params}, state, jnp.asarray(emb), 0, method='update',
                        mutable=['intermediates'])
  m = np.asarray(inter['intermediates']['res_mixing'][0])  # [T, B, n, n]
  assert m.min() >= 0
  np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-3)  # rows
  np.testing.assert_allclose(m.sum(-2), 1.0, atol=1e-3)  # columns
  assert m.reshape(-1, 16).std(0).max() > 1e-3  # the mixing depends on the token


@pytest.mark.parametrize('kind', ['layerscale', 'highway', 'rezero'])
def test_learnable_identity_ablations_update_the_stream_as_their_connector(kind):
  """DeRes with identity=<kind> and paths='identity' is the <kind> connector itself."""
  rng, emb, sublayers = _random_units(11, units=3)
  d = emb.shape[-1]
  conn = connectors.make(kind, width=d, num_units=3)
  base = conn.init(jax.random.PRNGKey(0), conn.init_state(jnp.asarray(emb)), jnp.asarray(emb), 0,
                   method='update')['params']
  base = jax.tree.map(lambda v: v + jnp.asarray(rng.normal(size=v.shape), jnp.float32), base)
  a = _run_units(kind, emb, sublayers, [base] * 3 + [{}])
  b = _run_units('deres', emb, sublayers, [{'stream': base}] * 3 + [{}], paths='identity',
                 identity=kind)
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)


def test_unrolled_only_connectors_refuse_scan_in_one_sentence():
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  c = config_lib.base_config()
  c.model.update(connector='hc', scan_layers=True)
  with pytest.raises(config_lib.ConfigError, match=r"connector='hc' .*set scan_layers=False\.$"):
    config_lib.validate(c)


def test_sinkhorn_equals_a_numpy_transcription_and_its_gradient_the_unrolled_one():
  """mHC's Sinkhorn-Knopp (a lax.scan) computes exp then alternate row/column normalisation,
  as a NumPy loop does; its gradient equals the Python-unrolled loop's (the earlier code)."""
  from deres_jax.models import hyper_connections  # pylint: disable=g-import-not-at-top
  logits = np.random.default_rng(0).normal(size=(3, 5, 4, 4)).astype(np.float32)
  for iters in (0, 1, 7):
    m = np.exp(logits - logits.max(axis=(-2, -1), keepdims=True))
    for _ in range(iters):
      m = m / m.sum(-1, keepdims=True)
      m = m / m.sum(-2, keepdims=True)
    np.testing.assert_allclose(hyper_connections.sinkhorn(jnp.asarray(logits), iters), m, rtol=1e-5)

  def unrolled(x, iters=7):
    m = jnp.exp(x - jnp.max(x, axis=(-2, -1), keepdims=True))
    for _ in range(iters):
      m = m / jnp.sum(m, axis=-1, keepdims=True)
      m = m / jnp.sum(m, axis=-2, keepdims=True)
    return m

  w = jnp.arange(16.0).reshape(4, 4)
  g_scan = jax.grad(lambda x: jnp.sum(hyper_connections.sinkhorn(x, 7) * w))(jnp.asarray(logits))
  g_loop = jax.grad(lambda x: jnp.sum(unrolled(x) * w))(jnp.asarray(logits))
  np.testing.assert_allclose(g_scan, g_loop, rtol=1e-4, atol=1e-6)
