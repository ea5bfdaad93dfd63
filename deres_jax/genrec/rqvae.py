"""RQ-VAE item tokenizer as in TIGER (Rajput et al. 2023, Sec. 3.1; Zeghidour et al. 2021).

  z = E(x)  (MLP d_in -> 512 -> 256 -> 128 -> 32, ReLU),   r_0 = z
  c_l = argmin_k ||r_{l-1} - e^l_k||,   r_l = r_{l-1} - e^l_{c_l},   z_q = sum_l e^l_{c_l}
  x_hat = D(z + sg[z_q - z])                                   (straight-through estimator)
  L = ||x - x_hat||^2 + sum_l ||sg[r_{l-1}] - e^l_{c_l}||^2 + beta ||r_{l-1} - sg[e^l_{c_l}]||^2
with beta = 0.25, 3 levels x 256 codes of dimension 32. Collapse remedies: the codebooks are
initialised by residual k-means on the encoder outputs of the TRAINING items only, TIGER's
Adagrad (lr 0.4), and dead-code restarts: a code unused for `restart_every` steps is moved
to a random residual of the current batch at its level (Dhariwal et al. 2020, Jukebox).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deres_jax.genrec import rqkmeans


class RQVAE(nn.Module):
  """Encoder, residual quantiser and decoder; `__call__(x)` -> (x_hat, aux)."""
  input_dim: int                    # d_in, item content vector size
  hidden: tuple = (512, 256, 128)   # encoder widths (decoder mirrors them)
  latent_dim: int = 32              # codeword dimension
  levels: int = 3                   # m, codebooks
  codebook_size: int = 256          # K, codes per level
  beta: float = 0.25                # commitment weight

  def setup(self):
    self.enc = [nn.Dense(h) for h in self.hidden] + [nn.Dense(self.latent_dim)]
    self.dec = [nn.Dense(h) for h in reversed(self.hidden)] + [nn.Dense(self.input_dim)]
    self.codebooks = self.param('codebooks', nn.initializers.normal(1.0),
                                (self.levels, self.codebook_size, self.latent_dim))

  def encode(self, x_nd):
    for layer in self.enc[:-1]:
      x_nd = nn.relu(layer(x_nd))
    return self.enc[-1](x_nd)

  def decode(self, z_nd):
    for layer in self.dec[:-1]:
      z_nd = nn.relu(layer(z_nd))
    return self.dec[-1](z_nd)

  def quantize(self, z_nd, levels=None):
    """Codes [n, m'], z_q [n, D], residuals [m'+1, n, D] and the RQ loss over the first m' levels."""
    r, zq, codes, residuals, rq_loss = z_nd, jnp.zeros_like(z_nd), [], [z_nd], 0.0
    for l in range(self.levels if levels is None else levels):
      e_kd = self.codebooks[l]
      d2 = (r ** 2).sum(1, keepdims=True) - 2 * r @ e_kd.T + (e_kd ** 2).sum(1)
      c = jnp.argmin(d2, axis=1)
      e = e_kd[c]
      rq_loss += (((jax.lax.stop_gradient(r) - e) ** 2).sum(1).mean()
                  + self.beta * ((r - jax.lax.stop_gradient(e)) ** 2).sum(1).mean())
      r = r - jax.lax.stop_gradient(e)  # the next level quantises what is left
      zq, codes = zq + e, codes + [c]
      residuals.append(r)
    codes = jnp.stack(codes, 1) if codes else jnp.zeros((z_nd.shape[0], 0), jnp.int32)
    return codes, zq, jnp.stack(residuals), rq_loss

  def __call__(self, x_nd, levels=None):
    z = self.encode(x_nd)
    codes, zq, residuals, rq_loss = self.quantize(z, levels)
    x_hat = self.decode(z + jax.lax.stop_gradient(zq - z))
    recon = ((x_nd - x_hat) ** 2).sum(1).mean()
    return x_hat, {'codes': codes, 'residuals': residuals, 'recon': recon, 'rq': rq_loss}


def init_params(model: RQVAE, x_train: np.ndarray, seed: int, kmeans_iters: int = 20):
  """Random MLP weights; codebooks by residual k-means of E(x) over the training items only."""
  # Jitted: run eagerly, every op of the forward pass would be compiled on its own.
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, model.input_dim)))['params']
  encode = jax.jit(lambda p, x: model.apply({'params': p}, x, method=RQVAE.encode))
  z = np.asarray(encode(params, jnp.asarray(x_train)))
  books = rqkmeans.fit(z, model.levels, model.codebook_size, kmeans_iters, seed)
  return dict(params, codebooks=jnp.asarray(books))


def fit(model: RQVAE, x: np.ndarray, train_rows: np.ndarray, config, seed: int = 0, log=print):
  """Trains the RQ-VAE on x[train_rows]; returns (params, history of logged dicts).

  config: steps, batch_size, learning_rate, optimizer ('adagrad' | 'adam'), restart_every
  (0 = no dead-code restarts), kmeans_iters, log_every.
  """
  x_train = np.asarray(x[train_rows], np.float32)
  params = init_params(model, x_train, seed, config.kmeans_iters)
  tx = {'adagrad': optax.adagrad, 'adam': optax.adam}[config.optimizer](config.learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb):
    def loss_fn(p):
      _, aux = model.apply({'params': p}, xb)
      return aux['recon'] + aux['rq'], aux
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  rng = np.random.default_rng(seed)
  batch = min(config.batch_size, len(x_train))
  used = np.zeros((model.levels, model.codebook_size), bool)
  history = []
  for i in range(config.steps):
    xb = x_train[rng.choice(len(x_train), batch, replace=False)]
    params, opt_state, loss, aux = step(params, opt_state, jnp.asarray(xb))
    codes = np.asarray(aux['codes'])
    used[np.arange(model.levels)[None, :], codes] = True
    restarted = 0
    if config.restart_every and (i + 1) % config.restart_every == 0:
      books, res = np.array(params['codebooks']), np.asarray(aux['residuals'])
      for l in range(model.levels):
        dead = np.flatnonzero(~used[l])
        books[l, dead] = res[l, rng.choice(batch, len(dead))]  # input residual of level l
        restarted += len(dead)
      params = dict(params, codebooks=jnp.asarray(books))
      used[:] = False
    if (i + 1) % config.log_every == 0 or i + 1 == config.steps:
      rec = {'step': i + 1, 'loss': float(loss), 'recon': float(aux['recon']), 'rq': float(aux['rq']),
             'restarted': restarted}
      history.append(rec)
      log(f'rqvae {rec}')
  return params, history


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(model: RQVAE, params, x_nd, levels):
  return model.apply({'params': params}, x_nd, levels)[1]


def codes_of(model: RQVAE, params, x: np.ndarray, levels=None) -> np.ndarray:
  """Quantiser codes [n, m] of content vectors x [n, d]."""
  return np.asarray(_apply(model, params, jnp.asarray(x, jnp.float32), levels)['codes'], np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _recon_per_level(model: RQVAE, params, x_nd):
  def run(m):
    z = m.encode(x_nd)
    _, _, residuals, _ = m.quantize(z)
    # z_q after l levels = z - r_l (the residual left after l codewords).
    return jnp.stack([((x_nd - m.decode(z - r)) ** 2).sum(1).mean() for r in residuals])
  return nn.apply(run, model)({'params': params})


def recon_per_level(model: RQVAE, params, x: np.ndarray) -> np.ndarray:
  """Mean ||x - D(sum of the first l codewords)||^2 for l = 0..levels, one compilation."""
  return np.asarray(_recon_per_level(model, params, jnp.asarray(x, jnp.float32)))
