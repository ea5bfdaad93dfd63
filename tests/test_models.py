"""Mathematical properties of the CTR Transformer and its residual connectors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.models import backbone
from deres_jax.models import connectors
from deres_jax.models.logreg import LogisticRegression
from deres_jax.models.transformer import CTRTransformer

VOCAB = (11, 30, 7, 200)


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.gamma(1.0, 5.0, (n, 3)).astype(np.float32)
  dense[0, 1] = np.nan  # a missing value
  cat = np.stack([rng.integers(0, v, n) for v in VOCAB], 1).astype(np.int32)
  cat[1, 0] = 999  # out of vocabulary
  return {'dense': jnp.asarray(dense), 'cat': jnp.asarray(cat),
          'label': jnp.asarray(rng.integers(0, 2, n).astype(np.float32))}


def _model(**kw):
  base = dict(vocab_sizes=VOCAB, num_dense=3, embed_dim=8, width=16, num_heads=2, depth=3,
              ffn_mult=2, block_size=2, head_hidden=(16,))
  return CTRTransformer(**{**base, **kw})


@pytest.mark.parametrize('kw', [dict(), dict(scan_layers=True), dict(layer_unit='block'),
                                dict(tokenizer='group', num_tokens=4), dict(query='token'),
                                dict(gate='scalar', gate_init=2.0), dict(block_size=1)])
def test_deres_at_init_equals_prenorm(kw):
  """Zero pseudo-queries + SiLU weights: the AttnRes path is exactly 0, DeRes == PreNorm.

  Exactly with merge='add' (u = h + g*0 = h); the default 'gated' merge feeds g*h = h/2 to the
  sublayers' RMSNorm, which equals RMSNorm(h) up to the norm's epsilon (checked below).
  """
  batch = _batch()
  pre, de = _model(connector='prenorm', **kw), _model(connector='deres', merge='add', **kw)
  vp = pre.init(jax.random.PRNGKey(0), batch)
  vd = de.init(jax.random.PRNGKey(0), batch)
  # Same seed, same module names: DeRes's init *is* PreNorm's plus zero queries and gates.
  params = nn.unbox(vd['params'])
  for path, x in jax.tree_util.tree_leaves_with_path(nn.unbox(vp['params'])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(_lookup(params, path, None)))
  out_p = pre.apply({'params': nn.unbox(vp['params'])}, batch)[0]
  out_d = de.apply({'params': params}, batch)[0]
  np.testing.assert_array_equal(np.asarray(out_p), np.asarray(out_d))
  assert float(jnp.std(out_p)) > 0  # not trivially constant
  gated = _model(connector='deres', merge='gated', **kw)
  np.testing.assert_allclose(np.asarray(gated.apply({'params': params}, batch)[0]), np.asarray(out_p),
                             rtol=2e-2, atol=2e-3)


def _lookup(tree, path, default):
  node = tree
  for k in path:
    key = getattr(k, 'key', None)
    if not isinstance(node, dict) or key not in node:
      return default
    node = node[key]
  return node


def test_deres_differs_from_prenorm_once_queries_move():
  batch = _batch()
  de = _model(connector='deres')
  v = nn.unbox(de.init(jax.random.PRNGKey(0), batch)['params'])
  out0 = de.apply({'params': v}, batch)[0]
  v2 = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.5 if getattr(p[-1], 'key', '') == 'query' else x, v)
  out1 = de.apply({'params': v2}, batch)[0]
  assert float(jnp.abs(out1 - out0).max()) > 1e-4


def test_full_attnres_equals_block_attnres_with_block_size_one():
  """block_size=1 makes every unit its own block: Full AttnRes; check against explicit unrolling."""
  batch = _batch()
  full = _model(connector='attnres', block_size=1, scan_layers=False)
  v = nn.unbox(full.init(jax.random.PRNGKey(1), batch)['params'])
  v = jax.tree_util.tree_map_with_path(  # non-zero queries so depth weights are not uniform
      lambda p, x: x + 0.3 * jnp.arange(x.size).reshape(x.shape) / x.size
      if getattr(p[-1], 'key', '') == 'query' else x, v)
  out_full, inter = full.apply({'params': v}, batch, mutable=['intermediates'])
  # Same parameters under scan (stacked) must give the same function.
  scanned = _model(connector='attnres', block_size=1, scan_layers=True)
  stacked = _stack_blocks(v)
  out_scan = scanned.apply({'params': stacked}, batch)[0]
  np.testing.assert_allclose(np.asarray(out_full[0]), np.asarray(out_scan), rtol=1e-5, atol=1e-5)
  # Unit j of Full AttnRes attends over exactly j + 1 sources (embedding + j outputs).
  w = inter['intermediates']
  for i in range(3):
    for name, j in (('mixer_res', 2 * i), ('ffn_res', 2 * i + 1)):
      alpha = np.asarray(w['backbone'][f'block_{i}'][name]['depth_weights'][0])
      assert (np.abs(alpha).sum(axis=(1, 2)) > 0).sum() == j + 1
      np.testing.assert_allclose(alpha.sum(0), 1.0, rtol=1e-5)  # softmax sums to one


@pytest.mark.parametrize('connector', ['attnres', 'deres'])
def test_scan_equals_loop(connector):
  batch = _batch()
  loop = _model(connector=connector, scan_layers=False)
  v = nn.unbox(loop.init(jax.random.PRNGKey(2), batch)['params'])
  v = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.2 if getattr(p[-1], 'key', '') in ('query', 'gate') else x, v)
  stacked = _stack_blocks(v)
  a = loop.apply({'params': v}, batch)[0]
  b = _model(connector=connector, scan_layers=True).apply({'params': stacked}, batch)[0]
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def _stack_blocks(tree, depth=3):
  """Unrolled parameters (backbone/block_i) -> the stacked layout of nn.scan (backbone/blocks)."""
  bb = tree['backbone']
  out = {k: w for k, w in bb.items() if not k.startswith('block_')}
  out['blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs), *[bb[f'block_{i}'] for i in range(depth)])
  return dict(tree, backbone=out)


@pytest.mark.parametrize('kw', [dict(connector='deres'), dict(connector='attnres'),
                                dict(connector='deres', layer_unit='block'),
                                dict(connector='deres', value='hidden', block_size=3)])
def test_scan_gradients_equal_loop_gradients(kw):
  """The scan that rebuilds its source buffer in the backward pass (source_scan.py) gives the
  unrolled model's loss and gradients."""
  batch = _batch()
  # Non-zero output projections (branch_init='default'), so every parameter has a live gradient.
  kw = dict(kw, branch_init='default')
  loop, scanned = _model(scan_layers=False, **kw), _model(scan_layers=True, **kw)
  v = nn.unbox(loop.init(jax.random.PRNGKey(5), batch)['params'])
  v = jax.tree_util.tree_map_with_path(  # non-zero queries: every depth weight is live
      lambda p, x: x + 0.3 if getattr(p[-1], 'key', '') in ('query', 'gate') else x, v)

  def loss(model, params):
    logits = model.apply({'params': params}, batch)[0]
    return jnp.mean(jax.nn.softplus(logits) - batch['label'] * logits)

  la, ga = jax.value_and_grad(lambda p: loss(loop, p))(v)
  lb, gb = jax.value_and_grad(lambda p: loss(scanned, p))(_stack_blocks(v))
  np.testing.assert_allclose(float(lb), float(la), rtol=1e-6)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(_stack_blocks(ga)), jax.tree.leaves(gb)):
    # float32 sums reordered by scan: tolerance relative to the leaf's scale (CI saw 1.9e-6 on ~1).
    scale = float(np.max(np.abs(np.asarray(x)))) + 1e-12
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5 * scale,
                               err_msg=jax.tree_util.keystr(path))


def test_scan_does_not_keep_the_source_buffer_per_block(monkeypatch):
  """XLA's memory analysis of the gradient: plain nn.scan stores the [N_slots, T, B, D] source
  buffer once per block; source_scan saves one slot per block, so it needs at least
  (depth - 1) buffers less."""
  depth, batch = 8, _batch(n=256)
  model = _model(connector='deres', scan_layers=True, depth=depth)
  params = nn.unbox(model.init(jax.random.PRNGKey(6), batch)['params'])

  def temp_bytes():
    grad = jax.jit(jax.grad(lambda p: model.apply({'params': p}, batch)[0].sum()))
    return grad.lower(params).compile().memory_analysis().temp_size_in_bytes

  rebuilt = temp_bytes()
  monkeypatch.setattr(backbone.Backbone, '_rebuild_sources', lambda self, train: False)
  saved_per_block = temp_bytes()
  t, d = 3 + len(VOCAB), 16  # tokens (one per dense and categorical field), width
  buffer_bytes = connectors.num_slots(2 * depth, 2) * t * 256 * d * 4
  assert saved_per_block - rebuilt > (depth - 1) * buffer_bytes, (saved_per_block, rebuilt)


def test_scanned_model_given_unrolled_params_says_so():
  batch = _batch()
  unrolled = _model(connector='deres').init(jax.random.PRNGKey(0), batch)['params']
  with pytest.raises(ValueError, match='not interchangeable'):
    _model(connector='deres', scan_layers=True).apply({'params': unrolled}, batch)


def test_gradients_reach_both_paths_and_the_gate():
  batch = _batch()
  de = _model(connector='deres', scan_layers=False, branch_init='default')  # live sublayer outputs
  v = nn.unbox(de.init(jax.random.PRNGKey(3), batch)['params'])
  v = jax.tree_util.tree_map_with_path(  # away from init, where the gate's gradient is 0 (a = 0)
      lambda p, x: x + 0.1 if getattr(p[-1], 'key', '') == 'query' else x, v)

  def loss(params):
    logits, _ = de.apply({'params': params}, batch)
    return jnp.mean(jax.nn.softplus(logits) - batch['label'] * logits)

  g = jax.grad(loss)(v)
  for i in range(3):
    for conn in ('mixer_res', 'ffn_res'):
      assert float(jnp.abs(g['backbone'][f'block_{i}'][conn]['gate']).max()) > 0, (i, conn, 'gate')
      assert float(jnp.abs(g['backbone'][f'block_{i}'][conn]['query']).max()) > 0, (i, conn, 'query')
    # Sublayer weights (reached through the identity path and the attention path).
    assert float(jnp.abs(g['backbone'][f'block_{i}']['ffn']['down']['kernel']).max()) > 0
  assert float(jnp.abs(g['backbone']['out_res']['gate']).max()) > 0
  assert float(jnp.abs(g['tokenizer']['embedding']).max()) > 0


def test_query_gradient_nonzero_at_init():
  """SiLU'(0) = 1/2: zero-initialised pseudo-queries still learn from the first step.

  With the default zero branches (branch_init='zero') the units' queries see no gradient until the
  output projections have moved (one step); the output connector's query learns at once.
  """
  batch = _batch()
  de = _model(connector='deres', scan_layers=True, branch_init='default')
  v = nn.unbox(de.init(jax.random.PRNGKey(4), batch)['params'])
  g = jax.grad(lambda p: de.apply({'params': p}, batch)[0].sum())(v)
  assert float(jnp.abs(g['backbone']['blocks']['mixer_res']['query']).max()) > 0
  zero = _model(connector='deres', scan_layers=True)
  v = nn.unbox(zero.init(jax.random.PRNGKey(4), batch)['params'])
  g = jax.grad(lambda p: zero.apply({'params': p}, batch)[0].sum())(v)
  assert float(jnp.abs(g['backbone']['out_res']['query']).max()) > 0


def test_missing_dense_and_oov_ids_use_their_rows():
  batch = _batch()
  m = _model(connector='prenorm', tokenizer='field', embed_dim=16, width=16)
  v = nn.unbox(m.init(jax.random.PRNGKey(5), batch)['params'])
  out = m.apply({'params': v}, batch)[0]
  assert np.isfinite(np.asarray(out)).all()  # NaN dense input never reaches the output
  # An out-of-range id behaves exactly like the OOV id 0.
  b2 = dict(batch, cat=batch['cat'].at[1, 0].set(0))
  np.testing.assert_array_equal(np.asarray(out), np.asarray(m.apply({'params': v}, b2)[0]))


def test_logreg_is_linear_in_its_weights():
  batch = _batch()
  lr = LogisticRegression(VOCAB, 3)
  v = lr.init(jax.random.PRNGKey(0), batch)['params']
  v = jax.tree.map(lambda x: x + 0.1, nn.unbox(v))
  v2 = jax.tree.map(lambda x: 2 * x, v)
  out, out2 = lr.apply({'params': v}, batch)[0], lr.apply({'params': v2}, batch)[0]
  np.testing.assert_allclose(np.asarray(out2), 2 * np.asarray(out), rtol=1e-5)


def test_dcnv2_cross_layers_follow_eq_1():
  """x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, checked against a NumPy transcription."""
  from deres_jax.models.dcnv2 import DCNv2  # pylint: disable=g-import-not-at-top
  batch = _batch()
  m = DCNv2(VOCAB, 3, embed_dim=4, num_cross=2, dnn_hidden=(8,))
  v = nn.unbox(m.init(jax.random.PRNGKey(0), batch)['params'])
  logits, _ = m.apply({'params': v}, batch)
  # Rebuild x_0 from the tokenizer alone and run the cross and deep towers in NumPy.
  from deres_jax.models.tokenizer import FeatureTokenizer  # pylint: disable=g-import-not-at-top
  tok = FeatureTokenizer(VOCAB, 3, 4, 4, 'field')
  x0 = np.asarray(tok.apply({'params': v['tokenizer']}, batch)[0]).reshape(len(batch['label']), -1)
  x = x0
  for i in range(2):
    x = x0 * (x @ np.asarray(v[f'cross_{i}']['kernel']) + np.asarray(v[f'cross_{i}']['bias'])) + x
  deep = np.maximum(x0 @ np.asarray(v['dnn_0']['kernel']) + np.asarray(v['dnn_0']['bias']), 0)
  out = np.concatenate([x, deep], -1) @ np.asarray(v['logit']['kernel'])[:, 0] + np.asarray(v['logit']['bias'])[0]
  np.testing.assert_allclose(np.asarray(logits), out, rtol=1e-4, atol=1e-5)
