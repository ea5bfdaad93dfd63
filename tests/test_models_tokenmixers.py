"""RankMixer and TokenMixer-Large: token mixing as a permutation, its inverse, the auxiliary loss,
post-LN streams, FLOPs, checks and training."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deres_jax import models
from deres_jax.models import backbone
from deres_jax.models import flops
from deres_jax.models import rankmixer
from deres_jax.models.rankmixer import RankMixer
from deres_jax.models.rankmixer import TokenMixing
from deres_jax.models.tokenmixer_large import MixRevert
from deres_jax.models.tokenmixer_large import TokenMixerLarge

VOCAB = (11, 30, 7, 200)
TINY = dict(vocab_sizes=VOCAB, num_dense=3, embed_dim=8, width=16, num_tokens=4,
            head_hidden=(16,))


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.gamma(1.0, 5.0, (n, 3)).astype(np.float32)
  dense[0, 1] = np.nan  # a missing value
  cat = np.stack([rng.integers(0, v, n) for v in VOCAB], 1).astype(np.int32)
  cat[1, 0] = 999  # out of vocabulary
  return {'dense': jnp.asarray(dense), 'cat': jnp.asarray(cat),
          'label': jnp.asarray(rng.integers(0, 2, n).astype(np.float32))}


def _rankmixer(**kw):
  return RankMixer(**{**TINY, 'depth': 2, **kw})


def _tml(**kw):
  return TokenMixerLarge(**{**TINY, 'depth': 4, 'aux_hidden': (8,), **kw})


def _random_params(module, *args, scale=0.3, seed=0):
  """Random parameters of the init's shapes: no init to compile, and no special init values."""
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)['params'])
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda a: jnp.asarray(scale * rng.normal(size=a.shape).astype(np.float32)), shapes)


def _np_mix(x, h):
  """Eq. 2 by loops: y[h, b, t*Dh + k] = x[t, b, h*Dh + k]."""
  t, b, d = x.shape
  dh = d // h
  y = np.zeros((h, b, t * dh), x.dtype)
  for ti in range(t):
    for hi in range(h):
      y[hi, :, ti * dh:(ti + 1) * dh] = x[ti, :, hi * dh:(hi + 1) * dh]
  return y


def _np_unmix(y, t):
  """The inverse of `_np_mix`, by loops: x[t, b, h*Dh + k] = y[h, b, t*Dh + k]."""
  h, b, w = y.shape
  dh = w // t
  x = np.zeros((t, b, h * dh), y.dtype)
  for ti in range(t):
    for hi in range(h):
      x[ti, :, hi * dh:(hi + 1) * dh] = y[hi, :, ti * dh:(ti + 1) * dh]
  return x


def test_token_mixing_is_a_permutation_and_an_involution():
  t, b, d = 4, 3, 16
  x = np.random.default_rng(0).normal(size=(t, b, d)).astype(np.float32)
  mixer = TokenMixing()
  assert not mixer.init(jax.random.PRNGKey(0), x)  # parameter-free
  y = np.asarray(mixer.apply({}, jnp.asarray(x)))
  assert y.shape == x.shape
  np.testing.assert_array_equal(np.sort(y, axis=None), np.sort(x, axis=None))  # same multiset
  np.testing.assert_array_equal(y, _np_mix(x, t))
  np.testing.assert_array_equal(_np_unmix(y, t), x)  # the NumPy inverse recovers the input
  # H = T: a transpose of the [T, H] grid of heads, so mixing twice is the identity.
  np.testing.assert_array_equal(np.asarray(mixer.apply({}, jnp.asarray(y))), x)
  # The new token 0 holds the first head of every token.
  np.testing.assert_array_equal(y[0, :, :d // t], x[0, :, :d // t])
  np.testing.assert_array_equal(y[0, :, d // t:2 * d // t], x[1, :, :d // t])


@pytest.mark.parametrize('t,h,d', [(4, 4, 16), (5, 2, 8), (3, 8, 16), (6, 1, 4)])
def test_revert_inverts_mix(t, h, d):
  x = jnp.asarray(np.random.default_rng(1).normal(size=(t, 2, d)).astype(np.float32))
  s = rankmixer.mix(x, h)
  assert s.shape == (h, 2, t * d // h)
  np.testing.assert_array_equal(np.asarray(s), _np_mix(np.asarray(x), h))
  np.testing.assert_array_equal(np.asarray(rankmixer.revert(s, t)), np.asarray(x))


@pytest.mark.parametrize('num_heads', [0, 2])
def test_mix_revert_matches_numpy(num_heads):
  """MixRevert = inverse-mix(per-token SwiGLU(mix(x))), transcribed in NumPy from its params."""
  t, b, d = 4, 3, 8
  x = np.random.default_rng(2).normal(size=(t, b, d)).astype(np.float32)
  mixer = MixRevert(num_heads=num_heads, mult=2)
  params = _random_params(mixer, jnp.asarray(x))
  out = np.asarray(jax.jit(mixer.apply)({'params': params}, jnp.asarray(x)))
  p = jax.tree.map(np.asarray, params['swiglu'])
  h = num_heads or t
  s = _np_mix(x, h)  # [H, B, T*D/H]
  gate_up = np.einsum('hbw,hwk->hbk', s, p['gate_up']['kernel']) + p['gate_up']['bias'][:, None]
  gate, up = np.split(gate_up, 2, axis=-1)
  hid = gate / (1 + np.exp(-gate)) * up  # Swish(gate) * up
  y = np.einsum('hbk,hkw->hbw', hid, p['down']['kernel']) + p['down']['bias'][:, None]
  np.testing.assert_allclose(out, _np_unmix(y, t), rtol=1e-5, atol=1e-6)
  assert np.abs(out).max() > 1e-3  # not trivially zero


def _capture_backbone(model, variables, batch, train):
  """(logits, aux, backbone (out, hidden), sown intermediates) of one jitted apply."""
  apply = jax.jit(lambda v, b: model.apply(
      v, b, train=train, mutable=['intermediates'],
      capture_intermediates=lambda mdl, method: (isinstance(mdl, backbone.Backbone)
                                                   and method == '__call__')))
  (logits, aux), state = apply(variables, batch)
  inter = state['intermediates']
  return logits, aux, inter['backbone']['__call__'][0], inter


def test_tml_aux_loss_matches_an_independent_computation():
  batch, model = _batch(8), _tml(aux_weight=0.25, depth=3)
  variables = {'params': _random_params(model, batch)}
  _, aux, (_, hidden), inter = _capture_backbone(model, variables, batch, train=True)
  z = np.asarray(inter['aux_logits'][0])  # [L-1, B]
  assert z.shape == (model.depth - 1, 8)
  # The auxiliary logits: RMSNorm + the shared MLP head on the global token (token 0) of the
  # stream after each intermediate block, transcribed from the parameters.
  p = jax.tree.map(np.asarray, variables['params'])
  for l in range(model.depth - 1):
    g = np.asarray(hidden[l][0])  # [B, D]
    g = g / np.sqrt(np.mean(g * g, -1, keepdims=True) + 1e-6) * p['aux_norm']['scale']
    a = np.maximum(g @ p['aux_head']['dense_0']['kernel'] + p['aux_head']['dense_0']['bias'], 0)
    ref = (a @ p['aux_head']['logit']['kernel'] + p['aux_head']['logit']['bias'])[:, 0]
    np.testing.assert_allclose(z[l], ref, rtol=1e-4, atol=1e-5)
  y = np.asarray(batch['label'])[None]
  bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
  loss = float(aux['losses']['tml_aux'])
  np.testing.assert_allclose(loss, 0.25 * bce.mean(), rtol=1e-5)
  assert np.isfinite(loss) and loss > 0
  # Absent at eval, without labels, and with aux_weight = 0 (shapes suffice: no compiling).
  assert 'losses' not in jax.eval_shape(model.apply, variables, batch)[1]
  no_label = {k: v for k, v in batch.items() if k != 'label'}
  no_label_aux = jax.eval_shape(lambda v: model.apply(v, no_label, train=True), variables)[1]
  assert 'losses' not in no_label_aux
  off = _tml(aux_weight=0.0, depth=3)
  off_vars = jax.eval_shape(off.init, jax.random.PRNGKey(0), batch)
  assert 'losses' not in jax.eval_shape(lambda v: off.apply(v, batch, train=True), off_vars)[1]


def test_tml_global_token_is_prepended():
  """T = num_tokens: num_tokens - 1 group tokens after one global token from their concat."""
  batch, model = _batch(), _tml()
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
  kernel = nn.unbox(variables['params'])['global_token']['kernel']
  assert kernel.shape == ((model.num_tokens - 1) * model.width, model.width)
  _, _, (out, hidden), _ = jax.eval_shape(
      lambda v: _capture_backbone(model, v, batch, train=False), variables)
  assert out.shape == (model.num_tokens, 6, model.width)
  assert len(hidden) == model.depth


@pytest.mark.parametrize('connector', ['postnorm', 'prenorm'])
def test_rankmixer_postnorm_streams_are_layer_normalised(connector):
  """Post-LN (Eq. 3): after each block the stream is gain * (per-token standardised) + bias."""
  batch, model = _batch(), _rankmixer(connector=connector, depth=2)
  params = _random_params(model, batch)  # random gains and biases too
  _, _, (_, hidden), _ = _capture_backbone(model, {'params': params}, batch, train=False)
  assert len(hidden) == 2
  for l, h in enumerate(hidden):  # [T, B, D]
    h = np.asarray(h)
    if connector == 'postnorm':
      ln = jax.tree.map(np.asarray, params['backbone'][f'block_{l}']['ffn_post_norm'])
      z = (h - ln['bias']) / ln['scale']
      np.testing.assert_allclose(z.mean(-1), 0, atol=1e-4)
      np.testing.assert_allclose(z.var(-1), 1, atol=1e-3)
    else:  # the pre-norm stream is not renormalised
      assert np.abs(h.var(-1) - 1).max() > 0.1


FLOPS_CASES = [
    (RankMixer, dict(connector='postnorm')),
    (RankMixer, dict(connector='deres', block_size=2)),
    (TokenMixerLarge, dict()),
    (TokenMixerLarge, dict(num_heads=2, connector='deres', block_size=2, aux_weight=0.0)),
]


@pytest.mark.parametrize('cls,kw', FLOPS_CASES)
def test_analytic_flops_match_xla(cls, kw):
  """Within 20% at D = 64 (at D = 16 norms and GELUs, not counted, are a larger share)."""
  model = cls(**{**TINY, 'width': 64, 'depth': 2, **kw})
  model.check()
  batch = _batch()
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)  # shapes suffice
  analytic = model.flops_per_example()
  assert analytic['total'] == sum(v for k, v in analytic.items() if k != 'total')
  xla = flops.xla_flops_per_example(model, variables, batch)
  assert abs(analytic['total'] / xla - 1) < 0.2, (analytic, xla)


@pytest.mark.parametrize('model,match', [
    (_rankmixer(num_heads=2), 'num_heads=2'),
    (_rankmixer(tokenizer='field'), 'width=16'),  # T = 7 fields do not divide D = 16
    (_rankmixer(layer_unit='block'), 'layer_unit'),
    (_tml(num_heads=3), 'divide'),
    (_tml(scan_layers=True, skip_every=0), 'scan_layers'),  # the auxiliary loss
    (_tml(scan_layers=True, aux_weight=0.0), 'scan_layers'),  # the skips (backbone check)
    (_tml(connector='attnres', aux_weight=0.0), 'attnres'),  # skips need the identity stream
    (_tml(connector='attnres', skip_every=0), 'attnres'),  # so does the auxiliary loss
    (_tml(num_tokens=1), 'num_tokens'),
    (_tml(skip_every=5), 'skip_every'),
])
def test_check_raises_on_impossible_combinations(model, match):
  with pytest.raises(ValueError, match=match):
    model.check()


def test_defaults_are_valid_and_documented():
  for name in ('rankmixer', 'tokenmixer_large'):
    fields = models.fields(name)
    assert all(comment for _, comment in fields.values()), fields
    for k, allowed in models.choices(name).items():
      assert fields[k][0] in allowed, (name, k)
    model = models.get_class(name)(vocab_sizes=VOCAB, num_dense=3)
    model.check()
  _tml(scan_layers=True, skip_every=0, aux_weight=0.0).check()  # scanned TML without extras


@pytest.mark.parametrize('model', [_rankmixer(), _tml(depth=2)],
                         ids=['rankmixer', 'tokenmixer_large'])
def test_adam_steps_reduce_the_loss(model):
  batch = _batch(32, seed=3)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)['params']
  opt = optax.adam(3e-3)

  def loss_fn(p):
    logits, aux = model.apply({'params': p}, batch, train=True)
    bce = optax.sigmoid_binary_cross_entropy(logits, batch['label']).mean()
    return bce + sum(aux.get('losses', {}).values())

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state, losses = opt.init(params), []
  for _ in range(15):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.9 * losses[0], losses
