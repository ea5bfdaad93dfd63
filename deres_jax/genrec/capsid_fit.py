"""Training CAPSID (capsid.py) in the paper's two stages, and turning its routing into unique IDs.

Stage 1 (the tokenizer alone, research/capsid.md §9.3): projection, capsule poses and biases and
decoder by Adam on
  L_1 = lambda_r recon + lambda_s spread(m_t) + lambda_l E[L],  m_t = 0.2 + 0.7 min(1, t / anneal)
(the margin annealed 0.2 -> 0.9 over `spread_anneal_steps`; the lambdas are not published).
Initialisation (ours, `init_params`): a projection centred on the training items, then layer by
layer k-means centroids mu_lk of the residual the model's own routing leaves, b_lk = (s_l/n) mu_lk
(the vote at r = 0: the capsule's centre) and poses W_lk = (s_l/n)(w - |mu_lk|^2/(2n^2)) I + noise,
so the agreement ranks capsules like nearest-centroid assignment with a per-layer precision s_l.
Stage 2: capsule centres, poses, projection, decoder (and SemanticBPE's merge model) frozen
(optax.set_to_zero: bit-identical); only the rank-8 routing adapter A_l B_l trains (and the merge
gates' biases, semantic_bpe.fit_gates). The paper trains them with the generator's next-token
loss; here the IDs are fixed before the generator trains (genrec/tasks.py), so the adapter is
trained on L_1 (a stated deviation).
IDs: every item's winners up to its length, then collisions (`collisions` config field; the
paper does not say how it resolves them):
  'extend': items sharing an ID that are shorter than L_max take their next layer's winner,
            repeated until no such item is left; then
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


def init_params(model: capsid.CapsID, x_train: np.ndarray, seed: int, kmeans_iters: int = 20,
                pose_init: float = 2.0, vote_scale=(4.0, 4.0, 16.0), pose_noise: float = 0.05,
                centre: bool = True):
  """Random MLP weights, a centred projection, and votes that start as a nearest-centroid rule.

  Ours (the paper does not say how it initialises); results/capsid_tokenizer_beauty.md measures why:
  * centre: the last projection layer's bias is shifted so that z = P(x) has mean 0 over the
    training items. A random ReLU MLP maps every item into a narrow cone (Beauty: mean pairwise
    cosine of r_0 0.60, |mean r_0| 0.77), and the first agreement step, v = mean_k u_k, then
    points along the common mean instead of along r: routing ignores the item.
  * layer by layer (l = 1..L_max), with r the residual that layers < l leave on the training items
    under this model's own soft routing, n = mean ||r||, mu_lk = k-means centroids of r and
    s_l = vote_scale[l] (the last entry repeats):
      b_lk = (s_l / n) mu_lk,   W_lk = (s_l / n) (w - |mu_lk|^2 / (2 n^2)) I + noise   (w = pose_init)
    so for ||r|| = n, u_k . r/n = s_l (w + 1/2 - ||r - mu_lk||^2 / (2 n^2)): while o points along
    r the agreement ranks capsules as nearest-centroid assignment does, with a precision set by
    s_l alone, the same at every depth; w keeps the r-part of every vote positive (|v| ~ s_l w).
  Why a per-layer scale: max_k c_k >= tau = 0.82 among K = 256 capsules needs a logit gap of
  ln(255 * 0.82 / 0.18) = 7.1 over a flat field (1.5 over one close rival), and q = max c ||o|| >= 0.82
  needs ||o|| >= 0.82, i.e. |v| >= 1.51 (squash with 0.5). Small scales (< 4) leave c near 1/K
  (q <= 0.3, no confidence stop); a large scale at layers 1-2 makes most IDs stop at length 1-2 and
  collide. The default (4, 4, 16): layers 1-2 route softly, confidence can fire from layer 3 on.
  """
  params = jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, model.input_dim)))['params']
  encode = jax.jit(lambda p, x: model.apply({'params': p}, x, method=capsid.CapsID.encode))
  if centre:
    z = np.asarray(model.apply({'params': params}, jnp.asarray(x_train), method=capsid.CapsID.project))
    last = f'enc_{len(model.hidden)}'
    params = dict(params, **{last: dict(params[last], bias=params[last]['bias'] - z.mean(0))})
  r = encode(params, jnp.asarray(x_train))
  L, K, D = model.max_levels, model.num_capsules, model.latent_dim
  scales = list(vote_scale) + [vote_scale[-1]] * L
  rng = np.random.default_rng(seed)
  pose, bias = np.zeros((L, K, D, D), np.float32), np.zeros((L, K, D), np.float32)
  for l in range(L):
    mu, _ = rqkmeans.kmeans(np.asarray(r), K, kmeans_iters, seed + l)
    n = max(float(np.linalg.norm(np.asarray(r), axis=1).mean()), 1e-6)
    s = scales[l] / n
    diag = s * (pose_init - (mu ** 2).sum(-1) / (2 * n ** 2))                          # [K]
    pose[l] = diag[:, None, None] * np.eye(D) + rng.normal(0, pose_noise / np.sqrt(D), (K, D, D))
    bias[l] = s * mu
    # The residual this layer leaves (the soft rule of capsid.CapsID.tokenize; adapter B = 0 at init).
    u = capsid.votes(r, jnp.asarray(pose[l]), jnp.asarray(bias[l]))
    c, _, _ = capsid.route(u, model.iters, model.squash_k)
    r = r - capsid.routed_vote(u, c, model.squash_k, model.residual)
  return dict(params, bias=jnp.asarray(bias), pose=jnp.asarray(pose))


def margin_at(step, anneal_steps: int, start: float = 0.2, end: float = 0.9):
  """The spread loss margin, linear from `start` to `end` over `anneal_steps` (paper: 0.2 -> 0.9)."""
  return start + (end - start) * min(1.0, step / max(anneal_steps, 1))


def loss_fn(model, params, xb, margin, c):
  """L_1 (module docstring) and the model's aux dict; c holds recon_weight, spread_weight, length_weight."""
  _, aux = model.apply({'params': params}, xb, margin)
  loss = c.recon_weight * aux['recon'] + c.spread_weight * aux['spread'] + c.length_weight * aux['expected_length']
  return loss, aux


def stage_mask(params, stage: int):
  """{leaf: 'train' | 'frozen'}: stage 1 trains all but the adapter; stage 2 only the adapter."""
  def label(path, _):
    name = str(getattr(path[0], 'key', path[0]))
    adapter = name.startswith('adapter_')
    return 'train' if adapter == (stage == 2) else 'frozen'
  return jax.tree_util.tree_map_with_path(label, params)


def optimizer(params, stage: int, learning_rate: float):
  """Adam on the stage's trainable leaves; the others get exactly zero updates (bit-identical)."""
  return optax.multi_transform({'train': optax.adam(learning_rate), 'frozen': optax.set_to_zero()},
                               stage_mask(params, stage))


def fit(model: capsid.CapsID, x: np.ndarray, train_rows: np.ndarray, config, seed: int = 0, log=print,
        params=None, stage: int = 1):
  """Trains one stage on x[train_rows].

  Args:
    model: the CapsID module.
    x: item features [n, d_in].
    train_rows: rows the tokenizer may see (training items only).
    config: steps (stage2_steps for stage 2), batch_size, learning_rate, kmeans_iters, log_every,
      recon_weight, spread_weight, length_weight, spread_anneal_steps, pose_init.
    seed: initialisation and batch order.
    log: printer.
    params: stage 2 starts from these (stage 1: None, initialised by `init_params`).
    stage: 1 or 2.
  Returns:
    (params, history of logged dicts).
  """
  x_train = np.asarray(x[train_rows], np.float32)
  if params is None:
    params = init_params(model, x_train, seed, config.kmeans_iters, config.get('pose_init', 2.0),
                         tuple(config.get('vote_scale', (4.0, 4.0, 16.0))), centre=config.get('centre', True))
  tx = optimizer(params, stage, config.learning_rate)
  opt_state = tx.init(params)
  steps = config.steps if stage == 1 else config.get('stage2_steps', 0)

  @jax.jit
  def step(params, opt_state, xb, margin):
    (loss, aux), grads = jax.value_and_grad(lambda p: loss_fn(model, p, xb, margin, config), has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, aux

  rng = np.random.default_rng(seed + 1000 * stage)
  batch = min(config.batch_size, len(x_train))
  history = []
  for i in range(steps):
    xb = x_train[rng.choice(len(x_train), batch, replace=False)]
    m = margin_at(i, config.spread_anneal_steps) if stage == 1 else 0.9   # stage 2: the final margin
    params, opt_state, loss, aux = step(params, opt_state, jnp.asarray(xb), jnp.float32(m))
    if (i + 1) % config.log_every == 0 or i + 1 == steps:
      rec = {'stage': stage, 'step': i + 1, 'loss': float(loss), 'recon': float(aux['recon']),
             'spread': float(aux['spread']), 'expected_length': float(aux['expected_length']),
             'mean_length': float(np.mean(aux['length'])), 'margin': m}
      history.append(rec)
      log(f'capsid {rec}')
  return params, history


@functools.partial(jax.jit, static_argnums=0)
def _tokenize(model, params, x_nd):
  out = model.apply({'params': params}, x_nd)[1]
  return {k: out[k] for k in ('tokens', 'tokens_all', 'length', 'conf', 'stop_rule', 'res_norm', 'sub_norm',
                               'winner')}


def route_items(model: capsid.CapsID, params, x: np.ndarray, chunk: int = 2048) -> dict:
  """Deterministic routing of every row of x: tokens [n, L] (-1 after the end), tokens_all, length, conf,
  stop_rule (index into capsid.STOP_RULES), res_norm, sub_norm, winner ([n, L] each: capsid.CapsID.tokenize)."""
  outs = [_tokenize(model, params, jnp.asarray(x[i:i + chunk], jnp.float32)) for i in range(0, len(x), chunk)]
  return {k: np.concatenate([np.asarray(o[k]) for o in outs]) for k in outs[0]}


def _duplicated(codes: np.ndarray) -> np.ndarray:
  _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
  return counts[inv.ravel()] > 1


def resolve(tokens_all: np.ndarray, length: np.ndarray, collisions: str = 'extend') -> tuple:
  """Unique variable-length codes [n, L+1] (-1 = unused) from the winners and lengths."""
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
