"""Classic CTR baselines (DNN, FinalNet, Wukong), each checked against a NumPy forward pass."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deres_jax.models import flops
from deres_jax.models.dnn import DNN
from deres_jax.models.finalnet import FinalNet
from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models.wukong import Wukong, WukongLayer

VOCAB = (11, 30, 7, 200)
E = 8  # tiny embedding size
TINY = {  # the tiny variant of each model, as used by every test here
    'dnn': dict(cls=DNN, embed_dim=E, hidden=(16, 8)),
    'finalnet': dict(cls=FinalNet, embed_dim=E, block1_hidden=(16, 8), block2_hidden=(8,)),
    'wukong': dict(cls=Wukong, embed_dim=E, num_layers=2, num_fmb=4, num_lcb=4, rank=4,
                   fmb_hidden=(32,), head_hidden=(32,)),
}


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.gamma(1.0, 5.0, (n, 3)).astype(np.float32)
  dense[0, 1] = np.nan  # a missing value
  cat = np.stack([rng.integers(0, v, n) for v in VOCAB], 1).astype(np.int32)
  cat[1, 0] = 999  # out of vocabulary
  return {'dense': jnp.asarray(dense), 'cat': jnp.asarray(cat),
          'label': jnp.asarray(rng.integers(0, 2, n).astype(np.float32))}


def _tiny(name, **kw):
  kw = {**TINY[name], **kw}
  return kw.pop('cls')(vocab_sizes=VOCAB, num_dense=3, **kw)


def _params(model, x, seed=0, noise=0.3):
  """Random parameters of the model's shapes: kernels ~ N(0, 1/fan_in), norm scales and the
  field gate's bias ~ 1 + noise N(0, 1), other vectors ~ noise N(0, 1). Generic values (no zero
  or one initialisations left) and no RNG compiled by XLA, which is slow on these CPUs."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)['params']
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    z = rng.standard_normal(leaf.shape)
    if len(leaf.shape) >= 2:
      return jnp.asarray(z / np.sqrt(leaf.shape[-2]), jnp.float32)
    one = path[-1].key in ('scale', 'gate_bias')
    return jnp.asarray(float(one) + noise * z, jnp.float32)
  return jax.tree_util.tree_map_with_path(fill, shapes)


# The tests compile many small functions: XLA's backend optimisations halve the compile time
# and do not change the results checked here.
FAST_COMPILE = {'xla_backend_optimization_level': 0}


def _apply(model, params, x, **kw):
  fn = jax.jit(lambda p, x: model.apply({'params': p}, x, **kw), compiler_options=FAST_COMPILE)
  return fn(params, x)


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def _embeddings(model, params, batch):  # [B, F, E] from the model's own tokenizer parameters
  tok = FeatureTokenizer(VOCAB, 3, model.embed_dim, model.embed_dim, 'field')
  return np.asarray(_apply(tok, params['tokenizer'], batch)[0], np.float64)


def _dense(x, p):
  return x @ p['kernel'] + p['bias']


def _layer_norm(x, p, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * p['scale'] + p['bias']


def _bce(logit, target):
  return np.mean(np.logaddexp(0, logit) - target * logit)


# ----------------------------------------------------------------------------------------------
# DNN

def test_dnn_equals_numpy_mlp():
  batch = _batch()
  model = _tiny('dnn')
  params = _params(model, batch)
  x = _embeddings(model, params, batch).reshape(6, -1)
  p = _np(params)
  for i in range(len(model.hidden)):
    x = np.maximum(_dense(x, p[f'dense_{i}']), 0)
  want = _dense(x, p['logit'])[:, 0]
  got = _apply(model, params, batch)[0]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# FinalNet

def _np_final_block(x, p, model, hidden):
  for i in range(len(hidden)):
    h = _dense(x, p[f'final_{i}'])
    a, b = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
    x = np.concatenate([a, a * b], -1) if model.residual == 'concat' else a + a * b
    assert x.shape[1] == hidden[i]
    if model.norm == 'layer':
      x = _layer_norm(x, p[f'norm_{i}'])
    if model.activation == 'relu':
      x = np.maximum(x, 0)
  return x


@pytest.mark.parametrize('kw', [dict(), dict(residual='sum', block1_hidden=(16, 7)),
                                dict(towers=1, field_gate=False),
                                dict(norm='none', activation='none', distill=False)])
def test_finalnet_equals_numpy(kw):
  """FINAL layers [a; a*b] or a + a*b, the field gate, both towers and the distillation loss."""
  batch = _batch()
  model = _tiny('finalnet', **kw)
  model.check()
  params = _params(model, batch)
  emb = _embeddings(model, params, batch)  # [B, F, E]
  p = _np(params)
  x1 = emb
  if model.field_gate:  # G[b, g, e] = sum_f V[g, f] E[b, f, e] + u[g], written as loops
    gate = np.zeros_like(emb)
    for g in range(emb.shape[1]):
      for f in range(emb.shape[1]):
        gate[:, g] += p['gate_kernel'][g, f] * emb[:, f]
      gate[:, g] += p['gate_bias'][g]
    x1 = np.concatenate([emb, emb * gate], 1)
  y1 = _dense(_np_final_block(x1.reshape(6, -1), p['block1'], model, model.block1_hidden),
              p['head1'])[:, 0]
  want = y1
  if model.towers == 2:
    y2 = _dense(_np_final_block(emb.reshape(6, -1), p['block2'], model, model.block2_hidden),
                p['head2'])[:, 0]
    want = 0.5 * (y1 + y2)
  got, aux = _apply(model, params, batch)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4)
  if model.towers == 2 and model.distill:
    target = 1 / (1 + np.exp(-want))
    np.testing.assert_allclose(float(aux['losses']['distill']),
                               _bce(y1, target) + _bce(y2, target), rtol=1e-4)
  else:
    assert 'losses' not in aux


def test_finalnet_field_gate_starts_as_identity():
  """At init (V = 0, u = 1) block 1 reads [E; E]: duplicating the fields' embeddings."""
  batch = _batch()
  model = _tiny('finalnet')
  init = jax.jit(model.init, compiler_options=FAST_COMPILE)
  params = init(jax.random.key(0, impl='unsafe_rbg'), batch)['params']
  np.testing.assert_array_equal(np.asarray(params['gate_kernel']), 0)
  np.testing.assert_array_equal(np.asarray(params['gate_bias']), 1)


# ----------------------------------------------------------------------------------------------
# Wukong

@pytest.mark.parametrize('rank,num_lcb', [(3, 2), (0, 3)])  # n_F + n_L = 5 = n, then 6 != n
def test_wukong_layer_equals_numpy(rank, num_lcb):
  """FM = pairwise dot products (then X X^T Y), LCB = W_L X, residual, LayerNorms (Eqs. 1-5)."""
  b, n, d, num_fmb = 3, 5, 4, 3
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (b, n, d)), np.float64)
  layer = WukongLayer(num_fmb, num_lcb, rank, (6,))
  params = _params(layer, jnp.asarray(x, jnp.float32))
  out, inter = _apply(layer, params, jnp.asarray(x, jnp.float32), mutable=['intermediates'])
  p = _np(params)
  pair = np.zeros((b, n, n))  # the FM's pairwise matrix <x_i, x_j>, by a double loop over fields
  for i in range(n):
    for j in range(n):
      pair[:, i, j] = np.sum(x[:, i] * x[:, j], axis=-1)
  fm = pair @ p['fm_proj'] if rank else pair  # [B, n, k] or [B, n, n]
  np.testing.assert_allclose(np.asarray(inter['intermediates']['fm'][0]), fm, rtol=1e-4, atol=1e-4)
  lcb = np.zeros((b, num_lcb, d))  # LCB: row l is sum_i W_L[i, l] x_i
  for l in range(num_lcb):
    for i in range(n):
      lcb[:, l] += p['lcb'][i, l] * x[:, i]
  np.testing.assert_allclose(np.asarray(inter['intermediates']['lcb'][0]), lcb, rtol=1e-4,
                             atol=1e-4)
  h = _layer_norm(fm.reshape(b, -1), p['fmb_norm'])
  h = np.maximum(_dense(h, p['fmb_0']), 0)
  fmb = _dense(h, p['fmb_out']).reshape(b, num_fmb, d)
  res = x if num_fmb + num_lcb == n else np.einsum('bnd,nm->bmd', x, p['res_proj'])
  assert ('res_proj' in p) == (num_fmb + num_lcb != n)
  want = _layer_norm(np.concatenate([fmb, lcb], 1) + res, p['norm'])
  np.testing.assert_allclose(np.asarray(out), want, rtol=2e-4, atol=2e-4)


def test_wukong_stacks_layers_on_the_embeddings():
  """The model = tokenizer -> WukongLayer x l -> head MLP on the flattened last layer."""
  batch = _batch()
  model = _tiny('wukong')
  params = _params(model, batch)
  x = jnp.asarray(_embeddings(model, params, batch), jnp.float32)
  for i in range(model.num_layers):
    layer = WukongLayer(model.num_fmb, model.num_lcb, model.rank, model.fmb_hidden)
    x = _apply(layer, params[f'layer_{i}'], x)
  assert x.shape == (6, model.num_fmb + model.num_lcb, E)
  h = np.asarray(x, np.float64).reshape(6, -1)
  p = _np(params)
  for j in range(len(model.head_hidden)):
    h = np.maximum(_dense(h, p[f'head_{j}']), 0)
  got = _apply(model, params, batch)[0]
  np.testing.assert_allclose(np.asarray(got), _dense(h, p['logit'])[:, 0], rtol=2e-4, atol=2e-4)


# ----------------------------------------------------------------------------------------------
# All three: contract, FLOPs, check(), training

MODELS = [('dnn', DNN), ('finalnet', FinalNet), ('wukong', Wukong)]


@pytest.mark.parametrize('name,cls', MODELS)
def test_contract_fields(name, cls):
  fields = [f for f in dataclasses.fields(cls) if f.name not in ('parent', 'name')]
  assert [f.name for f in fields[:2]] == ['vocab_sizes', 'num_dense'], name
  assert fields[-1].name == 'dtype'
  own = fields[2:]
  assert {'embed_dim', 'dense_transform'} <= {f.name for f in own}
  assert all(f.default is not dataclasses.MISSING for f in own)
  assert all(isinstance(f.default, (int, float, str, bool, tuple)) for f in own[:-1])
  assert set(cls.CHOICES) <= {f.name for f in own}
  for field, choices in cls.CHOICES.items():
    assert getattr(cls, field) in choices
  cls(vocab_sizes=VOCAB, num_dense=3).check()  # the defaults are valid


FLOPS_CASES = [('dnn', {}), ('finalnet', {}), ('wukong', {}),  # default sizes
               ('dnn', TINY['dnn']), ('finalnet', TINY['finalnet']), ('wukong', TINY['wukong']),
               ('finalnet', dict(TINY['finalnet'], towers=1, residual='sum', field_gate=False)),
               ('wukong', dict(TINY['wukong'], rank=0))]


@pytest.mark.parametrize('name,kw', FLOPS_CASES)
def test_analytic_flops_match_xla(name, kw):
  batch = _batch(n=8)
  kw = dict(kw)
  cls = kw.pop('cls', dict(MODELS)[name])
  model = cls(vocab_sizes=VOCAB, num_dense=3, **kw)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)  # shapes suffice
  analytic = model.flops_per_example()
  assert analytic['total'] == sum(v for k, v in analytic.items() if k != 'total')
  xla = flops.xla_flops_per_example(model, variables, batch)
  assert abs(analytic['total'] / xla - 1) < 0.2, (name, kw, analytic, xla)


@pytest.mark.parametrize('cls,kw,match', [
    (DNN, dict(hidden=(16, 0)), 'hidden'),
    (DNN, dict(dropout=1.0), 'dropout'),
    (FinalNet, dict(block1_hidden=(15,)), 'block1_hidden'),
    (FinalNet, dict(block2_hidden=()), 'block2_hidden'),
    (FinalNet, dict(towers=3), 'towers'),
    (FinalNet, dict(norm='batch'), 'norm'),
    (Wukong, dict(num_fmb=0), 'num_fmb'),
    (Wukong, dict(rank=-1), 'rank'),
    (Wukong, dict(head_hidden=(-4,)), 'head_hidden'),
])
def test_check_rejects_bad_fields(cls, kw, match):
  with pytest.raises(ValueError, match=match):
    cls(vocab_sizes=VOCAB, num_dense=3, **kw).check()
  # The same value can be fine in another combination: block2_hidden is unused with one tower.
  if kw == dict(block2_hidden=()):
    cls(vocab_sizes=VOCAB, num_dense=3, towers=1, **kw).check()


@pytest.mark.parametrize('name,kw', [('dnn', dict(dropout=0.1)), ('finalnet', dict(dropout=0.1)),
                                     ('wukong', {})])
def test_gradients_finite_and_adam_reduces_loss(name, kw):
  batch = _batch(n=32, seed=3)
  model = _tiny(name, **kw)
  params = _params(model, batch, noise=0.05)

  def loss_fn(params, rng):
    logits, aux = model.apply({'params': params}, batch, train=True, rngs={'dropout': rng})
    bce = optax.sigmoid_binary_cross_entropy(logits, batch['label']).mean()
    return bce + sum(aux.get('losses', {}).values()), bce

  tx = optax.adam(1e-2)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def step(params, opt_state, rng):
    (_, bce), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, bce, optax.tree.norm(grads)

  opt_state = tx.init(params)
  rng = jax.random.key(0, impl='unsafe_rbg')  # XLA's own RNG: threefry compiles slowly on CPU
  losses = []
  for _ in range(10):  # one dropout mask throughout, so the losses differ only by the parameters
    params, opt_state, bce, grad_norm = step(params, opt_state, rng)
    assert np.isfinite(float(bce)) and np.isfinite(float(grad_norm)) and float(grad_norm) > 0
    losses.append(float(bce))
  before, after = losses[0], losses[-1]
  assert after < before - 0.01, (name, before, after)
