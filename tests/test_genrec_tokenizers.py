"""genrec/rqkmeans.py, rqvae.py, sid.py: k-means equivalence, RQ-VAE properties, unique IDs."""
import ml_collections
import numpy as np
import pytest

from deres_jax.genrec import rqkmeans
from deres_jax.genrec import rqvae
from deres_jax.genrec import sid


def _clusters(n=600, d=12, k=8, seed=0):
  """Points around k well-separated centres, plus a smaller second-level structure."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(0, 4, (k, d))
  sub = rng.normal(0, 1, (4, d))
  return (centres[rng.integers(k, size=n)] + sub[rng.integers(4, size=n)]
          + rng.normal(0, 0.1, (n, d))).astype(np.float32)


def test_rqkmeans_with_one_level_is_kmeans():
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top  # tests only
  x = _clusters()
  init = rqkmeans.kmeans_plus_plus(x, 8, seed=3)
  mu, c = rqkmeans.kmeans(x, 8, iters=30, init=init)
  ref = KMeans(8, init=init.astype(np.float64), n_init=1, max_iter=30, algorithm='lloyd', tol=0).fit(
      x.astype(np.float64))
  np.testing.assert_array_equal(c, ref.labels_)
  np.testing.assert_allclose(mu, ref.cluster_centers_, atol=1e-4)
  # One level of residual k-means is that k-means: same codebook, same codes.
  books = rqkmeans.fit(x, levels=1, k=8, iters=30, seed=3)
  mu1, c1 = rqkmeans.kmeans(x, 8, iters=30, seed=3)
  np.testing.assert_allclose(books[0], mu1)
  np.testing.assert_array_equal(rqkmeans.encode(x, books)[0][:, 0], c1)


def test_rqkmeans_residual_norms_shrink_and_fit_uses_given_rows():
  x = _clusters()
  books = rqkmeans.fit(x, levels=3, k=8, iters=20, fit_rows=np.arange(400))
  _, norms = rqkmeans.encode(x, books)
  means = norms.mean(1)
  assert np.all(np.diff(means) < 0), means
  x2 = x.copy()
  x2[400:] = 1e3  # rows outside fit_rows cannot move the codebooks
  np.testing.assert_array_equal(books, rqkmeans.fit(x2, levels=3, k=8, iters=20, fit_rows=np.arange(400)))


@pytest.fixture(scope='module')
def trained_rqvae():
  x = _clusters(n=512, d=12)
  model = rqvae.RQVAE(input_dim=12, hidden=(32, 16), latent_dim=4, levels=3, codebook_size=8)
  cfg = ml_collections.ConfigDict(dict(steps=100, batch_size=256, learning_rate=1e-2, optimizer='adam',
                                       restart_every=50, kmeans_iters=10, log_every=50))
  params, history = rqvae.fit(model, x, np.arange(400), cfg, seed=0, log=lambda _: None)
  return x, model, params, history


def test_rqvae_reconstruction_improves_with_levels_and_residuals_shrink(trained_rqvae):
  x, model, params, history = trained_rqvae
  assert history[-1]['loss'] < history[0]['loss']
  errors = rqvae.recon_per_level(model, params, x)
  assert np.all(np.diff(errors) < 0), errors
  _, aux = model.apply({'params': params}, x)
  norms = np.linalg.norm(np.asarray(aux['residuals']), axis=2).mean(1)  # [levels+1]
  assert np.all(np.diff(norms) < 0), norms


def test_rqvae_kmeans_init_uses_training_items_only():
  x = _clusters(n=300, d=12)
  model = rqvae.RQVAE(input_dim=12, hidden=(16,), latent_dim=4, levels=2, codebook_size=4)
  train = np.arange(200)
  a = rqvae.init_params(model, x[train], seed=0, kmeans_iters=5)
  # What `fit` does: only x[train_rows] reaches the initialisation.
  x2 = x.copy()
  x2[200:] *= 100
  b = rqvae.init_params(model, x2[train], seed=0, kmeans_iters=5)
  np.testing.assert_array_equal(a['codebooks'], b['codebooks'])
  # The initial codebooks are the residual k-means of the training latents.
  z = np.asarray(model.apply({'params': a}, x[train], method=rqvae.RQVAE.encode))
  np.testing.assert_allclose(a['codebooks'], rqkmeans.fit(z, 2, 4, 5, 0), atol=1e-6)


def test_collision_resolution_gives_unique_ids(trained_rqvae):
  x, model, params, _ = trained_rqvae
  codes = rqvae.codes_of(model, params, x)
  stats = sid.statistics(codes, [8, 8, 8])
  assert stats['id_length'] == 4 and 0 < stats['collision_rate'] <= 1
  table = sid.SidTable.from_codes(codes, [8, 8, 8])
  ids = table.codes[1:]
  assert len(np.unique(ids, axis=0)) == len(x)               # unique after the extra token
  np.testing.assert_array_equal(ids[:, :3], codes)            # the quantiser codes are kept
  assert table.level_sizes[-1] == stats['max_items_per_id']
  # Extra token 0 .. g-1 within each group of g colliding items, in item-id order.
  hand = sid.resolve_collisions(np.array([[1, 2], [3, 4], [1, 2], [1, 2]]))
  np.testing.assert_array_equal(hand[:, 2], [0, 0, 1, 2])
  np.testing.assert_allclose(sid.statistics(np.array([[1, 2], [3, 4], [1, 2], [1, 2]]), [5, 5])['collision_rate'],
                             0.75)
  assert all(table.item(ids[i]) == i + 1 for i in range(0, len(x), 37))


def test_sid_table_round_trips(tmp_path, trained_rqvae):
  x, model, params, _ = trained_rqvae
  table = sid.SidTable.from_codes(rqvae.codes_of(model, params, x), [8, 8, 8])
  table.save(str(tmp_path), {'collision_rate': 0.5})
  back = sid.SidTable.load(str(tmp_path))
  np.testing.assert_array_equal(back.codes, table.codes)
  assert back.level_sizes == table.level_sizes and back.item([99, 99, 99, 99]) == 0
