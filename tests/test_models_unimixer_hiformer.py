"""Properties of UniMixer (Sinkhorn mixing, annealing) and HiFormer (heterogeneous attention)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deres_jax.models import flops
from deres_jax.models.hiformer import HeterogeneousAttention, HiFormer
from deres_jax.models.unimixer import UniMixer, UniMixing, anneal_temperature, sinkhorn

VOCAB = (11, 30, 7, 200)
TINY = dict(vocab_sizes=VOCAB, num_dense=3, embed_dim=8, width=16, depth=2, num_tokens=4,
            num_heads=2, head_hidden=(16,))


def _batch(n=6, seed=0):
  rng = np.random.default_rng(seed)
  dense = rng.gamma(1.0, 5.0, (n, 3)).astype(np.float32)
  dense[0, 1] = np.nan  # a missing value
  cat = np.stack([rng.integers(0, v, n) for v in VOCAB], 1).astype(np.int32)
  cat[1, 0] = 999  # out of vocabulary
  return {'dense': jnp.asarray(dense), 'cat': jnp.asarray(cat),
          'label': jnp.asarray(rng.integers(0, 2, n).astype(np.float32))}


# --- UniMixer ---------------------------------------------------------------------------------

@pytest.mark.parametrize('std,tau', [(1.0, 1.0), (0.1, 0.05)])  # (0.1, temp_end): init scale
def test_sinkhorn_is_doubly_stochastic(std, tau):
  logits = std * jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8))  # a batch of matrices
  p = np.asarray(sinkhorn(logits / tau, 20))
  assert (p >= 0).all()
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-3)
  np.testing.assert_allclose(p.sum(-2), 1.0, atol=1e-3)
  # Rectangular marginals (UniMixing-Lite's A_G [n, r]: rows 1, columns n / r).
  a = np.asarray(sinkhorn(logits[0, :, :2] / tau, 20, 1.0, 4.0))
  np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-3)
  np.testing.assert_allclose(a.sum(-2), 4.0, atol=1e-3)


def test_sinkhorn_keeps_symmetric_input_symmetric_and_sharpens_with_tau():
  x = jax.random.normal(jax.random.PRNGKey(1), (6, 6))
  sym = 0.1 * (x + x.T) / 2
  soft, sharp = (np.asarray(sinkhorn(sym / tau, 20)) for tau in (1.0, 0.05))
  np.testing.assert_allclose(soft, soft.T, atol=1e-5)
  np.testing.assert_allclose(sharp, sharp.T, atol=1e-5)
  assert sharp.max() > soft.max() + 0.05  # lower tau: closer to a permutation


def test_temperature_schedule_is_geometric():
  kw = dict(temp_start=1.0, temp_end=0.05, anneal_steps=100)
  taus = [float(anneal_temperature(s, **kw)) for s in (0, 50, 100, 1000)]
  np.testing.assert_allclose(taus, [1.0, np.sqrt(0.05), 0.05, 0.05], rtol=1e-5)
  assert anneal_temperature(None, **kw) == 0.05  # no 'step' in the batch: temp_end


def test_unimixer_without_step_is_unimixer_after_annealing():
  """Documented: a batch without 'step' (evaluation) uses tau(anneal_steps) = temp_end."""
  model = UniMixer(**TINY, anneal_steps=10)
  batch = _batch()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)['params']
  apply = jax.jit(lambda b: model.apply({'params': params}, b)[0])
  out = lambda **kw: np.asarray(apply(dict(batch, **kw)))  # noqa: E731
  np.testing.assert_allclose(out(), out(step=jnp.int32(10)), rtol=1e-5, atol=1e-6)
  assert np.abs(out() - out(step=jnp.int32(0))).max() > 1e-4  # tau = 1 mixes differently


@pytest.mark.parametrize('lite', [False, True])
def test_unimixing_equals_explicit_kronecker_product(lite):
  """Eq. (1): y = (W_G (x) {W_B^i}) flatten(X), with blocks (i, j) = W_G[i, j] W_B^i."""
  t, b, d, h = 3, 2, 4, 2  # n = 6 blocks of 2
  x = jax.random.normal(jax.random.PRNGKey(0), (t, b, d))
  mixer = UniMixing(num_heads=h, temperature=0.5, lite=lite, lite_rank=2, lite_basis=3)
  params = mixer.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda p: 5 * p, params)  # sharper than the init: non-trivial mixing
  y, inter = mixer.apply(params, x, mutable=['intermediates'])
  (w_g, w_b), = inter['intermediates']['weights']
  w_g = np.asarray(w_g[0] @ w_g[1]) if lite else np.asarray(w_g)  # Lite: W_G = A_G B_G
  w_b = np.asarray(w_b)
  n = t * h
  big = np.block([[w_g[i, j] * w_b[i] for j in range(n)] for i in range(n)])  # [TD, TD]
  np.testing.assert_allclose(big.sum(0), 1.0, atol=1e-3)  # doubly stochastic, as W_perm is
  np.testing.assert_allclose(big.sum(1), 1.0, atol=1e-3)
  x_flat = np.asarray(x).transpose(1, 0, 2).reshape(b, t * d)  # flatten(X) per example
  expected = (x_flat @ big.T).reshape(b, t, d).transpose(1, 0, 2)
  np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


# --- HiFormer ---------------------------------------------------------------------------------

def test_low_rank_composite_projection_at_full_rank_equals_full():
  t, b, d = 3, 2, 4
  x = jax.random.normal(jax.random.PRNGKey(0), (t, b, d))
  full = HeterogeneousAttention(num_heads=2, low_rank=0)
  low = HeterogeneousAttention(num_heads=2, low_rank=t * d)
  pf = nn.unbox(full.init(jax.random.PRNGKey(1), x)['params'])
  m = pf['out']['kernel']  # W^O [T*D, T*D]
  pl = {'qkv': pf['qkv'], 'out_v': {'kernel': jnp.eye(t * d)}, 'out_u': {'kernel': m}}  # V U = M
  np.testing.assert_allclose(np.asarray(low.apply({'params': pl}, x)),
                             np.asarray(full.apply({'params': pf}, x)), rtol=1e-5, atol=1e-6)
  assert low.flops(t, t, d) == full.flops(t, t, d) + 2 * (t * d) ** 2  # 4 TD r vs 2 (TD)^2


def test_heterogeneous_attention_uses_token_specific_queries():
  """With W^O = I, changing token 0's query weights moves token 0's output only."""
  t, b, d = 4, 3, 8
  x = jax.random.normal(jax.random.PRNGKey(0), (t, b, d))
  attn = HeterogeneousAttention(num_heads=2)
  params = nn.unbox(attn.init(jax.random.PRNGKey(1), x)['params'])
  params['out'] = {'kernel': jnp.eye(t * d)}
  base = np.asarray(attn.apply({'params': params}, x))

  def perturbed(part):  # part 0 = W^Q, 1 = W^K of token 0 (qkv kernel [T, D, 3D])
    kernel = params['qkv']['kernel']
    kernel = kernel.at[0, :, part * d:(part + 1) * d].add(0.5)
    return np.asarray(attn.apply({'params': dict(params, qkv={'kernel': kernel})}, x))

  moved = np.abs(perturbed(0) - base).max(axis=(1, 2))  # per output token
  assert moved[0] > 1e-3 and moved[1:].max() < 1e-6, moved
  # Token 0's key is seen by every query: all tokens move.
  assert np.abs(perturbed(1) - base).max(axis=(1, 2)).min() > 1e-4


# --- Both -------------------------------------------------------------------------------------

FLOPS_CASES = [(UniMixer, {}), (UniMixer, dict(lite=True, lite_rank=4, num_heads=4)),
               (HiFormer, {}), (HiFormer, dict(low_rank=8, connector='deres', block_size=2))]


@pytest.mark.parametrize('cls,kw', FLOPS_CASES)
def test_analytic_flops_match_xla(cls, kw):
  # 256 rows: the per-step Sinkhorn weights (counted once by XLA) amortise over the batch.
  batch = _batch(n=256)
  model = cls(**dict(TINY, **kw))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)  # shapes suffice
  analytic = model.flops_per_example()
  xla = flops.xla_flops_per_example(model, variables, batch)
  assert abs(analytic['total'] / xla - 1) < 0.2, (cls.__name__, kw, analytic, xla)


@pytest.mark.parametrize('cls,kw,match', [
    (UniMixer, dict(num_heads=3), 'num_heads'),
    (UniMixer, dict(lite=True, lite_rank=0), 'lite_rank'),
    (UniMixer, dict(temp_end=0.0), 'temp_end'),
    (UniMixer, dict(layer_unit='block'), 'layer_unit'),  # SiameseNorm wraps every sublayer
    (HiFormer, dict(low_rank=65), 'low_rank'),         # T*D = 4 * 16 = 64
    (HiFormer, dict(num_heads=3), 'num_heads'),
])
def test_check_rejects_bad_fields(cls, kw, match):
  with pytest.raises(ValueError, match=match):
    cls(**dict(TINY, **kw)).check()
  cls(**TINY).check()
  cls(vocab_sizes=VOCAB, num_dense=3).check()  # the defaults are valid


@pytest.mark.parametrize('cls', [UniMixer, HiFormer])
def test_adam_reduces_loss(cls):
  batch = _batch(n=32, seed=3)
  model = cls(**TINY, **(dict(anneal_steps=8) if cls is UniMixer else {}))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)['params']
  tx = optax.adam(1e-2)

  def loss_fn(params, batch):
    logits = model.apply({'params': params}, batch, train=True)[0]
    return optax.sigmoid_binary_cross_entropy(logits, batch['label']).mean()

  @jax.jit
  def step(params, opt_state, i):
    # As train/step.py does: the step rides in the batch (UniMixer anneals tau on it).
    loss, grads = jax.value_and_grad(loss_fn)(params, dict(batch, step=i))
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

  eval_loss = jax.jit(loss_fn)
  opt_state = tx.init(params)
  before = float(eval_loss(params, batch))
  for i in range(8):
    params, opt_state, loss, grad_norm = step(params, opt_state, jnp.int32(i))
    assert np.isfinite(float(loss)) and float(grad_norm) > 0
  after = float(eval_loss(params, batch))  # no step: tau = temp_end, as reached at step 8
  assert after < before - 0.01, (cls.__name__, before, after)
