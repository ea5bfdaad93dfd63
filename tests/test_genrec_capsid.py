"""genrec/capsid.py, capsid_fit.py: routing properties, reduction to residual k-means, unique variable IDs."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from deres_jax.genrec import beam
from deres_jax.genrec import capsid
from deres_jax.genrec import capsid_fit
from deres_jax.genrec import rqkmeans
from deres_jax.genrec import tiger


def _points(n=300, d=6, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(0, 3, (8, d))[rng.integers(8, size=n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def test_routing_coefficients_are_a_distribution_and_squash_is_below_one():
  rng = np.random.default_rng(0)
  r, e = jnp.asarray(rng.normal(size=(50, 5)), jnp.float32), jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
  for top_m in (0, 3):
    c, v, _ = capsid.route(r, e, iters=3, tau=0.5, top_m=top_m)
    np.testing.assert_allclose(np.asarray(c).sum(1), 1.0, atol=1e-5)
    assert np.all(np.asarray(c) >= 0)
    if top_m:  # top-m sparsity: at most m capsules get weight
      assert np.all((np.asarray(c) > 0).sum(1) <= top_m)
    assert np.all(np.linalg.norm(np.asarray(v), axis=1) < 1.0)
  s = jnp.asarray(rng.normal(0, 10, (20, 4)), jnp.float32)
  v = np.asarray(capsid.squash(s))
  n = np.linalg.norm(np.asarray(s), axis=1)
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), n ** 2 / (1 + n ** 2), rtol=1e-5)   # Sabour Eq. 1
  np.testing.assert_allclose((v * np.asarray(s)).sum(1), np.linalg.norm(v, axis=1) * n, rtol=1e-5)  # parallel
  # More agreement iterations sharpen the routing (the agreement term favours the leading capsule).
  c1 = np.asarray(capsid.route(r, e, 1, 0.5, 0)[0]).max(1)
  c3 = np.asarray(capsid.route(r, e, 5, 0.5, 0)[0]).max(1)
  assert c3.mean() > c1.mean()


def _model(**kw):
  base = dict(input_dim=6, hidden=(16,), latent_dim=6, max_levels=3, min_levels=1, num_capsules=8, iters=3,
              tau=0.2, top_m=3, threshold=0.9)
  base.update(kw)
  return capsid.CapsID(**base)


def test_hard_fixed_length_capsid_is_residual_kmeans():
  x = _points()
  model = _model(hard=True, fixed_length=True, iters=1)
  params = capsid_fit.init_params(model, x, seed=0, kmeans_iters=5)
  z = np.asarray(model.apply({'params': params}, x, method=capsid.CapsID.encode))
  out = model.apply({'params': params}, z, method=capsid.CapsID.tokenize)
  codes, _ = rqkmeans.encode(z, np.asarray(params['capsules']))
  np.testing.assert_array_equal(np.asarray(out['tokens']), codes)
  assert np.all(np.asarray(out['length']) == 3)
  # Hard routing: the routed reconstruction is the winning capsule, so z_soft = sum of codewords.
  books = np.asarray(params['capsules'])
  np.testing.assert_allclose(np.asarray(out['z_soft']), sum(books[l][codes[:, l]] for l in range(3)), atol=1e-4)


def test_routed_reconstruction_is_the_coefficient_weighted_capsule_sum():
  x = _points(n=40)
  model = _model(fixed_length=True)
  params = capsid_fit.init_params(model, x, seed=1, kmeans_iters=3)
  z = model.apply({'params': params}, x, method=capsid.CapsID.encode)
  out = model.apply({'params': params}, z, method=capsid.CapsID.tokenize)
  books, c = np.asarray(params['capsules']), np.asarray(out['coeffs'])           # c: [L, n, K]
  q = sum(c[l] @ books[l] for l in range(3))
  np.testing.assert_allclose(np.asarray(out['z_soft']), q, rtol=1e-4, atol=1e-4)
  # The emitted token is the active (largest-coefficient) capsule; its coefficient is the confidence.
  np.testing.assert_array_equal(np.asarray(out['tokens']), c.argmax(2).T)
  np.testing.assert_allclose(np.asarray(out['conf']), c.max(2).T, rtol=1e-6)


def test_confidence_driven_length_stops_early_and_never_exceeds_the_maximum():
  # Capsules: level 0 holds the points exactly, so routing is confident there for items on a capsule.
  e = np.zeros((3, 4, 2), np.float32)
  e[0] = [[5, 0], [0, 5], [-5, 0], [0, -5]]
  e[1:] = [[1, 0], [0, 1], [-1, 0], [0, -1]]
  model = capsid.CapsID(input_dim=2, hidden=(), latent_dim=2, max_levels=3, min_levels=1, num_capsules=4,
                        iters=2, tau=0.05, top_m=2, threshold=0.95)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 2)))['params']
  params = dict(params, capsules=jnp.asarray(e))
  z = jnp.asarray([[5.0, 0.0], [2.5, 2.5], [0.0, -5.0]])   # on a capsule, halfway, on a capsule
  out = model.apply({'params': params}, z, method=capsid.CapsID.tokenize)
  length = np.asarray(out['length'])
  assert length[0] == 1 and length[2] == 1         # confident at level 1: the ID ends there
  assert length[1] == 3                            # ambiguous between two capsules: runs to L_max
  assert np.all(np.asarray(out['tokens'])[0, 1:] == -1)
  fixed = model.clone(fixed_length=True).apply({'params': params}, z, method=capsid.CapsID.tokenize)
  assert np.all(np.asarray(fixed['length']) == 3)
  strict = model.clone(min_levels=2).apply({'params': params}, z, method=capsid.CapsID.tokenize)
  assert np.all(np.asarray(strict['length']) >= 2)


@pytest.fixture(scope='module')
def fitted():
  x = _points(n=400)
  model = _model()
  cfg = ml_collections.ConfigDict(dict(steps=20, batch_size=200, learning_rate=3e-3, kmeans_iters=5, log_every=10,
                                       usage_weight=0.1, sharp_weight=0.01))
  params, history = capsid_fit.fit(model, x, np.arange(300), cfg, seed=0, log=lambda _: None)
  return x, model, params, history


def test_every_item_gets_a_unique_prefix_free_variable_length_id(fitted):
  x, model, params, history = fitted
  assert history[-1]['recon'] < history[0]['recon']
  routed = capsid_fit.route_items(model, params, x)
  for mode in ('extend', 'token'):
    codes, length = capsid_fit.resolve(routed['tokens_all'], routed['length'], mode)
    assert len(np.unique(codes, axis=0)) == len(x)
    assert np.all(length <= model.max_levels) and np.all(length >= routed['length'])
    # Token strings with the end token: no item's string is a prefix of another's.
    layout = tiger.TokenLayout([8, 8, 8, int(codes[:, -1].max()) + 1], num_user_tokens=4)
    tok = layout.item_tokens(codes)
    strings = [tuple(r[r > 0]) + (tiger.EOS,) for r in tok]
    assert len(set(strings)) == len(x)
    assert not any(a != b and b[:len(a)] == a for a in strings[:60] for b in strings)
  stats = capsid_fit.statistics(routed, codes, 8, np.arange(len(x)))
  assert 0 <= stats['collision_rate'] <= 1 and sum(stats['id_length_hist']) == len(x)
  # Hand case: two colliding length-1 items extend to level 2 and differ there.
  codes, length = capsid_fit.resolve(np.array([[1, 2, 0], [1, 3, 0], [4, 0, 0]]), np.array([1, 1, 1]))
  np.testing.assert_array_equal(length, [2, 2, 1])
  np.testing.assert_array_equal(codes, [[1, 2, -1, -1], [1, 3, -1, -1], [4, -1, -1, -1]])


def test_trie_over_variable_length_ids_only_yields_real_items(fitted):
  x, model, params, _ = fitted
  routed = capsid_fit.route_items(model, params, x)
  codes, _ = capsid_fit.resolve(routed['tokens_all'], routed['length'])
  layout = tiger.TokenLayout([8, 8, 8, int(codes[:, -1].max()) + 1], num_user_tokens=4)
  tok = layout.item_tokens(np.concatenate([np.full((1, codes.shape[1]), -1), codes]))
  seqs = [r[r > 0] for r in tok[1:]]
  trie = beam.build_trie(seqs, np.arange(1, len(x) + 1), tiger.EOS)
  table = jax.nn.log_softmax(jnp.asarray(np.random.default_rng(0).normal(0, 3, (trie.max_depth, layout.vocab_size))))
  items, _, tokens = beam.beam_search(lambda t_, p, t: jnp.broadcast_to(t_[t], p.shape[:2] + t_.shape[1:]),
                                      beam.trie_arrays(trie), table, 2, 20, trie.max_children, trie.max_depth)
  items, tokens = np.asarray(items), np.asarray(tokens)
  assert np.all(items > 0)
  for b in range(2):
    for item, t in zip(items[b], tokens[b]):
      n = len(seqs[item - 1])
      np.testing.assert_array_equal(t[:n], seqs[item - 1])   # the decoded string spells that item's ID
      assert t[n] == tiger.EOS
