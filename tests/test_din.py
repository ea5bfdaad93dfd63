"""DIN: the activation unit against NumPy, padding ignored, and learning a history rule."""
import jax
import numpy as np
import optax

from deres_jax.data.schema import Schema
from deres_jax import models
from deres_jax.models import din


def np_prelu(x, a):
  return np.where(x >= 0, x, a * x)


def test_activation_unit_matches_numpy_and_ignores_padding():
  rng = np.random.default_rng(0)
  keys = rng.normal(size=(3, 5, 4)).astype(np.float32)
  query = rng.normal(size=(3, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
  att = din.TargetAttention(hidden=(6, 3))
  params = att.init(jax.random.PRNGKey(0), keys, query, mask)['params']
  params = jax.tree.map(lambda x: x + 0.3, params)  # nonzero biases and alphas != 0.25
  out, weight = att.apply({'params': params}, keys, query, mask)
  p = jax.tree.map(np.asarray, params)
  q = np.broadcast_to(query[:, None], keys.shape)
  x = np.concatenate([keys, q, keys - q, keys * q], -1)
  for i in range(2):
    x = np_prelu(x @ p[f'dense_{i}']['kernel'] + p[f'dense_{i}']['bias'], p[f'prelu_{i}']['alpha'])
  w = (x @ p['score']['kernel'] + p['score']['bias'])[..., 0] * mask
  np.testing.assert_allclose(np.asarray(weight), w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(out), np.einsum('bl,bld->bd', w, keys), rtol=1e-5, atol=1e-5)
  # Anything at a padded position changes nothing; an empty history attends to nothing.
  other = np.where(mask[..., None], keys, 100.0 * rng.normal(size=keys.shape)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(att.apply({'params': params}, other, query, mask)[0]),
                             np.asarray(out), rtol=1e-6)
  assert np.all(np.asarray(out[2]) == 0)
  soft = din.TargetAttention(hidden=(6, 3), softmax=True)
  _, sw = soft.apply({'params': params}, keys, query, mask)
  np.testing.assert_allclose(np.asarray(sw).sum(-1), [1, 1, 0], atol=1e-6)


SCHEMA = Schema(cat_names=('user', 'item'), vocab_sizes=(4, 31), seq_names=('hist',),
                seq_vocab_sizes=(31,), seq_shared=('item',), seq_len=6)


def rule_batch(rng, n):
  """Click iff the candidate item is in the (variable-length) history: needs the target."""
  hist = rng.integers(1, 31, (n, 6))
  kept = rng.integers(1, 7, (n, 1))
  hist = np.where(np.arange(6) < 6 - kept, -1, hist)
  label = rng.integers(0, 2, n)
  pick = hist[np.arange(n), 6 - 1 - rng.integers(0, kept[:, 0])]  # a valid history item
  other = rng.integers(1, 31, n)
  item = np.where(label == 1, pick, other)
  label = np.array([i in h for i, h in zip(item, hist)], np.float32)
  return {'label': label, 'cat': np.stack([np.zeros(n, int), item], 1).astype(np.int32),
          'seq': hist[:, None, :].astype(np.int32)}


def test_din_learns_that_a_candidate_in_the_history_is_clicked():
  model = models.build(models.model_config('din', embed_dim=8, att_hidden=(16,), hidden=(16,)), SCHEMA)
  assert model.seq_share == (1,) and model.seq_len == 6
  rng = np.random.default_rng(0)
  params = model.init(jax.random.PRNGKey(0), rule_batch(rng, 8))['params']
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch):
    def loss(p):
      return optax.sigmoid_binary_cross_entropy(model.apply({'params': p}, batch)[0], batch['label']).mean()
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt
  for _ in range(150):
    params, opt = step(params, opt, rule_batch(rng, 256))
  test = rule_batch(np.random.default_rng(1), 2000)
  logits = np.asarray(jax.jit(lambda b: model.apply({'params': params}, b)[0])(test))
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  assert roc_auc_score(test['label'], logits) > 0.95
  assert model.flops_per_example()['attention'] > 0
