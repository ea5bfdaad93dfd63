"""genrec/capsid_fit.py: unique prefix-free variable-length IDs and a trie over them (routing: test_capsid_paper.py)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from deres_jax.genrec import beam
from deres_jax.genrec import capsid
from deres_jax.genrec import capsid_fit
from deres_jax.genrec import tiger
from deres_jax.genrec import tokenizer_stats


def _points(n=300, d=6, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(0, 3, (8, d))[rng.integers(8, size=n)] + rng.normal(0, 1, (n, d))).astype(np.float32)


def _model(**kw):
  base = dict(input_dim=6, hidden=(16,), latent_dim=6, max_levels=3, num_capsules=8, iters=3, adapter_rank=2)
  base.update(kw)
  return capsid.CapsID(**base)


@pytest.fixture(scope='module')
def fitted():
  x = _points(n=400)
  model = _model()
  cfg = ml_collections.ConfigDict(dict(steps=20, batch_size=200, learning_rate=3e-3, kmeans_iters=5, log_every=10,
                                       recon_weight=1.0, spread_weight=1.0, length_weight=0.01,
                                       spread_anneal_steps=10))
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
  stats = tokenizer_stats.diagnostics(routed['tokens'], 8, x, routed)
  assert 0 <= stats['collision_rate'] <= 1 and sum(stats['length_hist']) == len(x)
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
