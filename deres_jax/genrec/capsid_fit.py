"""Training CAPSID (capsid.py) and turning its routing into unique variable-length IDs.

fit: capsules initialised by residual k-means of the encoder outputs of the TRAINING items
only (as rqvae.init_params), then Adam on
  L = recon + commit + usage_weight * usage_loss + sharp_weight * sharp_loss   (capsid.py).
ids: every item's active capsules up to its confidence-driven length, then collisions
(`collisions` config field; the paper does not say how it resolves them):
  'extend': items sharing an ID that are shorter than L_max take their next level's active
            capsule, repeated until no such item is left; then
  'token':  items still sharing an ID get TIGER's extra token 0..g-1 (in item-id order) in
            an extra position; unique items get none (-1), so IDs stay short.
Codes are [n, L_max + 1] with -1 at unused positions; `sid.SidTable` keeps them.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deres_jax.genrec import capsid
from deres_jax.genrec import rqkmeans


def init_params(model: capsid.CapsID, x_train: np.ndarray, seed: int, kmeans_iters: int = 20):
  """Random MLP weights; capsules = residual k-means of E(x) over the training items only."""
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, model.input_dim)))['params']
  encode = jax.jit(lambda p, x: model.apply({'params': p}, x, method=capsid.CapsID.encode))
  z = np.asarray(encode(params, jnp.asarray(x_train)))
  books = rqkmeans.fit(z, model.max_levels, model.num_capsules, kmeans_iters, seed)
  return dict(params, capsules=jnp.asarray(books))


def fit(model: capsid.CapsID, x: np.ndarray, train_rows: np.ndarray, config, seed: int = 0, log=print):
  """Trains on x[train_rows]; config: steps, batch_size, learning_rate, kmeans_iters, log_every,
  usage_weight, sharp_weight. Returns (params, history of logged dicts)."""
  x_train = np.asarray(x[train_rows], np.float32)
  params = init_params(model, x_train, seed, config.kmeans_iters)
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb):
    def loss_fn(p):
      _, aux = model.apply({'params': p}, xb)
      loss = (aux['recon'] + aux['commit'] + config.usage_weight * aux['usage_loss']
              + config.sharp_weight * aux['sharp_loss'])
      return loss, aux
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  rng = np.random.default_rng(seed)
  batch = min(config.batch_size, len(x_train))
  history = []
  for i in range(config.steps):
    xb = x_train[rng.choice(len(x_train), batch, replace=False)]
    params, opt_state, loss, aux = step(params, opt_state, jnp.asarray(xb))
    if (i + 1) % config.log_every == 0 or i + 1 == config.steps:
      rec = {'step': i + 1, 'loss': float(loss), 'recon': float(aux['recon']), 'commit': float(aux['commit']),
             'usage_loss': float(aux['usage_loss']), 'mean_length': float(np.mean(aux['length']))}
      history.append(rec)
      log(f'capsid {rec}')
  return params, history


@functools.partial(jax.jit, static_argnums=0)
def _tokenize(model, params, x_nd):
  out = model.apply({'params': params}, x_nd)[1]
  return {k: out[k] for k in ('tokens', 'tokens_all', 'length', 'conf')}


def route_items(model: capsid.CapsID, params, x: np.ndarray, chunk: int = 4096) -> dict:
  """Deterministic routing of every row of x: tokens [n, L] (-1 after the end), tokens_all, length, conf."""
  outs = [_tokenize(model, params, jnp.asarray(x[i:i + chunk], jnp.float32)) for i in range(0, len(x), chunk)]
  return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


def _duplicated(codes: np.ndarray) -> np.ndarray:
  _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  return counts[inv.ravel()] > 1


def resolve(tokens_all: np.ndarray, length: np.ndarray, collisions: str = 'extend') -> tuple:
  """Unique variable-length codes [n, L+1] (-1 = unused) from the active capsules and lengths."""
  if collisions not in ('extend', 'token'):
    raise ValueError(f"collisions must be 'extend' or 'token', got {collisions!r}.")
  n, L = tokens_all.shape
  length = np.asarray(length).copy()
  cut = lambda: np.where(np.arange(L) < length[:, None], tokens_all, -1)
  while collisions == 'extend':
    grow = _duplicated(cut()) & (length < L)
    if not grow.any():
      break
    length[grow] += 1
  codes = cut()
  extra = np.full(n, -1, np.int64)
  dup = _duplicated(codes)
  if dup.any():
    _, inv = np.unique(codes[dup], axis=0, return_inverse=True)
    seen = {}
    for row, g in zip(np.flatnonzero(dup), inv.ravel()):  # rank inside the group, in id order
      extra[row] = seen.get(g, 0)
      seen[g] = extra[row] + 1
  return np.concatenate([codes, extra[:, None]], 1).astype(np.int32), length


def statistics(route_out: dict, codes: np.ndarray, num_capsules: int, train_count: np.ndarray) -> dict:
  """Capsule usage per level, collision rate before resolution, ID lengths, length vs popularity.

  train_count: [n] training frequency of each item (same order as codes).
  """
  raw, L = route_out['tokens'], route_out['tokens'].shape[1]
  final_len = (codes >= 0).sum(1)
  used = [raw[:, l][raw[:, l] >= 0] for l in range(L)]
  # Popularity quintiles by training count (ties by row order): mean final ID length in each.
  order = np.lexsort((np.arange(len(codes)), train_count))
  quint = np.empty(len(codes), np.int64)
  quint[order] = np.arange(len(codes)) * 5 // len(codes)
  rank = lambda v: np.argsort(np.argsort(v, kind='stable'), kind='stable').astype(np.float64)
  rho = np.corrcoef(rank(final_len), rank(train_count))[0, 1] if final_len.std() > 0 else 0.0
  return {
      'usage_per_level': [float(len(np.unique(u)) / num_capsules) for u in used],
      'items_reaching_level': [int(len(u)) for u in used],
      'collision_rate': float(_duplicated(raw).mean()),
      'routed_length_hist': np.bincount(route_out['length'], minlength=L + 1).tolist(),
      'id_length_hist': np.bincount(final_len, minlength=L + 2).tolist(),
      'mean_id_length': float(final_len.mean()),
      'mean_id_length_by_popularity_quintile': [float(final_len[quint == q].mean()) for q in range(5)],
      'spearman_length_vs_train_count': float(rho),
      'mean_confidence_per_level': [float(v) for v in route_out['conf'].mean(0)],
  }
