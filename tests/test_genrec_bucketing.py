"""Length bucketing for TIGER training: cutting left padding leaves the model unchanged, and the
bucketed batch order is a fixed function of (seed, epoch) that keeps one bucket per batch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deres_jax.data import iterator
from deres_jax.genrec import tiger


@pytest.mark.parametrize('position', ['relative', 'absolute'])
def test_cutting_left_padding_leaves_the_encoder_and_the_logits_unchanged(position):
  rng = np.random.default_rng(0)
  layout = tiger.TokenLayout([4, 4, 3], num_user_tokens=5)
  codes = np.concatenate([np.full((1, 3), -1), rng.integers(0, [4, 4, 3], size=(30, 3))])
  tok = layout.item_tokens(codes)
  L = 6
  hist = np.zeros((4, L), np.int64)
  for r, n in enumerate([1, 2, 3, 2]):   # longest history: 3 items of 6
    hist[r, L - n:] = rng.integers(1, 31, n)
  enc = layout.encoder_input(rng.integers(0, 99, 4), hist, tok)
  cut = layout.trim(enc, 3, 3)
  assert cut.shape == (4, 1 + 3 * 3) and (enc[:, :-cut.shape[1]] == 0).all()
  dec_in, _ = layout.decoder_io(rng.integers(1, 31, 4), tok)
  model = tiger.Tiger(vocab_size=layout.vocab_size, max_enc_len=1 + L * 3, max_dec_len=4, width=16, num_heads=2,
                      head_dim=8, mlp_dim=32, enc_depth=2, dec_depth=1, dropout=0.0, position=position,
                      output='full')
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(enc), jnp.asarray(dec_in))['params']
  if position == 'absolute':   # trained-looking positions, so a shift would show
    params = dict(params)
    params['enc_pos'] = jnp.asarray(rng.normal(size=params['enc_pos'].shape), jnp.float32)
  mem_full = model.apply({'params': params}, jnp.asarray(enc), method=tiger.Tiger.encode)
  mem_cut = model.apply({'params': params}, jnp.asarray(cut), method=tiger.Tiger.encode)
  real = cut > 0
  np.testing.assert_allclose(np.asarray(mem_cut)[real], np.asarray(mem_full)[:, -cut.shape[1]:][real], atol=2e-5)
  full = model.apply({'params': params}, jnp.asarray(enc), jnp.asarray(dec_in))
  short = model.apply({'params': params}, jnp.asarray(cut), jnp.asarray(dec_in))
  np.testing.assert_allclose(short, full, atol=2e-5)
  # The earlier layout (user token first, padding between it and the history) is not invariant:
  # cutting its padding moves the user token relative to the history.
  users = enc[np.arange(4), (L - (hist > 0).sum(1)) * 3]
  old = np.where(enc >= layout.first_user, 0, enc)
  old[:, 0] = users
  old_cut = np.concatenate([old[:, :1], old[:, -9:]], 1)
  a = model.apply({'params': params}, jnp.asarray(old), jnp.asarray(dec_in))
  b = model.apply({'params': params}, jnp.asarray(old_cut), jnp.asarray(dec_in))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4


def test_bucketed_batches_hold_one_bucket_and_resume_exactly():
  n, bs = 103, 8
  buckets = np.random.default_rng(1).integers(0, 4, n)
  split = {'x': np.arange(n), 'b': buckets}
  it = iterator.BatchIterator(split, bs, seed=3, columns=None, buckets=buckets)
  epoch = [next(it) for _ in range(it.batches_per_epoch)]
  seen = np.concatenate([b['x'] for b in epoch])
  assert len(set(seen)) == len(seen) == it.batches_per_epoch * bs       # no row twice in an epoch
  mixed = sum(len(set(b['b'])) > 1 for b in epoch)
  assert mixed <= 3                                                     # only where two buckets meet
  assert len({tuple(b['b']) for b in epoch[:4]}) > 1                     # batch order is shuffled
  nxt = [next(it)['x'] for _ in range(3)]                               # second epoch: a new order
  assert not np.array_equal(nxt[0], epoch[0]['x']) or not np.array_equal(nxt[1], epoch[1]['x'])
  again = iterator.BatchIterator(split, bs, seed=3, columns=None, buckets=buckets,
                                 position=it.batches_per_epoch + 1)    # resumed mid-epoch
  np.testing.assert_array_equal(next(again)['x'], nxt[1])
  with pytest.raises(ValueError, match='buckets has 5 keys'):
    iterator.BatchIterator(split, bs, columns=None, buckets=buckets[:5])


def test_every_process_cuts_a_multi_host_batch_to_the_same_width():
  rng = np.random.default_rng(4)
  layout = tiger.TokenLayout([4, 4, 3], num_user_tokens=5)
  tok = layout.item_tokens(np.concatenate([np.full((1, 3), -1), rng.integers(0, [4, 4, 3], size=(30, 3))]))
  n, L = 400, 12
  lengths = rng.integers(1, L + 1, n)
  hist = np.zeros((n, L), np.int64)
  for r, k in enumerate(lengths):
    hist[r, L - k:] = rng.integers(1, 31, k)
  split = {'user': np.arange(n), 'hist': hist, 'target': rng.integers(1, 31, n)}
  buckets = -(-lengths // 4)
  its = [iterator.BatchIterator(split, 32, seed=7, columns=None, buckets=buckets, process_index=p, process_count=2)
         for p in range(2)]
  for _ in range(2 * its[0].batches_per_epoch):
    widths = {layout.training_batch(next(it), tok, 4)['enc'].shape[1] for it in its}
    assert len(widths) == 1                       # one global shape, or the hosts would diverge


def test_first_layout_and_histories_with_gaps():
  layout = tiger.TokenLayout([4, 4, 3], num_user_tokens=5, user_token='first')
  tok = layout.item_tokens(np.array([[-1, -1, -1], [0, 3, 2], [3, 0, 0]]))
  enc = layout.encoder_input(np.array([7]), np.array([[0, 2, 1]]), tok)
  np.testing.assert_array_equal(enc[0], [layout.first_user + 2, 0, 0, 0, *tok[2], *tok[1]])  # the earlier layout
  with pytest.raises(ValueError, match="user_token='adjacent'"):
    layout.training_batch({'user': np.array([7]), 'hist': np.array([[0, 2, 1]]), 'target': np.array([1])}, tok, 4)
  adjacent = tiger.TokenLayout([4, 4, 3], num_user_tokens=5)
  enc = adjacent.encoder_input(np.array([7]), np.array([[2, 0, 1]]), tok)   # a gap: no item token overwritten
  np.testing.assert_array_equal(enc[0], [adjacent.first_user + 2, *tok[2], 0, 0, 0, *tok[1]])


def test_bucketing_with_the_first_layout_is_refused():
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.genrec import config as genrec_config  # pylint: disable=g-import-not-at-top
  c = genrec_config.base_config('tiger')
  c.data.user_token = 'first'
  c.data.compact_ids = False
  with pytest.raises(config_lib.ConfigError, match="bucket_items > 0 cuts left padding"):
    genrec_config.validate(c)
  c.data.bucket_items = 0
  genrec_config.validate(c)
  c.data.compact_ids = True
  with pytest.raises(config_lib.ConfigError, match="compact_ids=True puts the user token"):
    genrec_config.validate(c)


def test_compact_ids_put_variable_length_ids_back_to_back():
  """Encoder input of variable-length IDs: real tokens back to back after the user token, left
  padding only; fixed-length IDs give the same input either way; serving builds the same."""
  from deres_jax.serving import retriever  # pylint: disable=g-import-not-at-top
  codes = np.array([[-1, -1, -1], [0, -1, -1], [1, 2, -1], [3, 0, 1]])   # lengths 1, 2, 3
  blocks = tiger.TokenLayout([4, 4, 3], num_user_tokens=5)
  compact = tiger.TokenLayout([4, 4, 3], num_user_tokens=5, compact=True)
  tok = blocks.item_tokens(codes)
  users, hist = np.array([7, 8]), np.array([[0, 2, 1], [3, 1, 2]])
  enc = compact.encoder_input(users, hist, tok)
  u = compact.first_user
  np.testing.assert_array_equal(enc[0], [0] * 6 + [u + 2, *tok[2][:2], tok[1][0]])
  np.testing.assert_array_equal(enc[1], [0] * 3 + [u + 3, *tok[3], tok[1][0], *tok[2][:2]])
  padded = blocks.encoder_input(users, hist, tok)
  np.testing.assert_array_equal(np.sort(enc, 1), np.sort(padded, 1))   # the same tokens, moved
  fixed = blocks.item_tokens(np.array([[-1, -1, -1], [0, 1, 2], [3, 3, 0]]))
  np.testing.assert_array_equal(compact.encoder_input(users, np.array([[0, 0, 1], [2, 1, 2]]), fixed),
                                blocks.encoder_input(users, np.array([[0, 0, 1], [2, 1, 2]]), fixed))
  info = {'system': 'tiger', 'num_items': 3, 'max_len': 3, 'first_user': u, 'num_user_tokens': 5,
          'user_token': 'adjacent', 'compact_ids': True}
  served = retriever.Retriever({1: None}, info, tok).inputs([np.array([2, 1]), np.array([3, 1, 2])], users)
  np.testing.assert_array_equal(served, enc)
