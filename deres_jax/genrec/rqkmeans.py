"""k-means (Lloyd) and residual k-means (RQ-KMeans, GRID, Ju et al. 2025) semantic IDs.

k-means: k-means++ seeding (Arthur & Vassilvitskii 2007), then Lloyd iterations
  c_i = argmin_k ||x_i - mu_k||^2,   mu_k = mean{x_i : c_i = k}
(an empty cluster keeps its centroid). Residual k-means with m levels:
  r_0 = x,  c_l = kmeans_l(r_{l-1}),  r_l = r_{l-1} - mu^l_{c_l}
so one level is exactly k-means. Codebooks are fitted on the rows `fit_rows` (training items
only) and every item is then encoded by the same nearest-centroid residual rule.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
  """k-means++ initial centroids [k, d] (numpy, deterministic in `seed`)."""
  x = np.asarray(x, np.float64)
  if len(x) < k:
    raise ValueError(f'k-means with k={k} needs at least {k} rows, got {len(x)}.')
  rng = np.random.default_rng(seed)
  centers = [x[rng.integers(len(x))]]
  d2 = ((x - centers[0]) ** 2).sum(1)
  for _ in range(1, k):
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
    centers.append(x[rng.choice(len(x), p=p)])
    d2 = np.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
  return np.stack(centers).astype(np.float32)


def _assign(x_nd, mu_kd):
  d2 = (x_nd ** 2).sum(1, keepdims=True) - 2 * x_nd @ mu_kd.T + (mu_kd ** 2).sum(1)
  return jnp.argmin(d2, axis=1)


@functools.partial(jax.jit, static_argnums=2)
def _lloyd(x_nd, mu_kd, iters: int):
  k = mu_kd.shape[0]

  def body(_, mu):
    c = _assign(x_nd, mu)
    sums = jax.ops.segment_sum(x_nd, c, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(len(x_nd)), c, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], mu)

  mu = jax.lax.fori_loop(0, iters, body, mu_kd)
  return mu, _assign(x_nd, mu)


def kmeans(x: np.ndarray, k: int, iters: int = 50, seed: int = 0, init=None) -> tuple:
  """Lloyd's k-means. Returns (centroids [k, d] float32, assignments [n] int32)."""
  init = kmeans_plus_plus(x, k, seed) if init is None else np.asarray(init, np.float32)
  mu, c = _lloyd(jnp.asarray(x, jnp.float32), jnp.asarray(init), iters)
  return np.asarray(mu), np.asarray(c, np.int32)


@jax.jit
def _encode(x_nd, books_mkd):
  r, codes, norms = x_nd, [], [jnp.linalg.norm(x_nd, axis=1)]
  for mu in books_mkd:
    c = _assign(r, mu)
    r = r - mu[c]
    codes.append(c)
    norms.append(jnp.linalg.norm(r, axis=1))
  return jnp.stack(codes, 1), jnp.stack(norms)


def encode(x: np.ndarray, codebooks: np.ndarray) -> tuple:
  """Residual nearest-centroid codes [n, m] and the residuals' norms [m+1, n] (level 0 = ||x||)."""
  codes, norms = _encode(jnp.asarray(x, jnp.float32), jnp.asarray(codebooks, jnp.float32))
  return np.asarray(codes, np.int32), np.asarray(norms)


def fit(x: np.ndarray, levels: int, k: int, iters: int = 50, seed: int = 0, fit_rows=None) -> np.ndarray:
  """Residual k-means codebooks [levels, k, d] fitted on x[fit_rows] (all rows if None)."""
  r = np.asarray(x if fit_rows is None else x[fit_rows], np.float32)
  books = []
  for level in range(levels):
    mu, c = kmeans(r, k, iters, seed + level)
    books.append(mu)
    r = r - mu[c]
  return np.stack(books)
