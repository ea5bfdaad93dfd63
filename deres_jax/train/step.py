"""The train state and the jitted train/predict steps, for any model of `deres_jax.models`.

`create_state_from` materialises parameters and optimizer state directly into their
shardings (shapes first, then one jit with out_shardings); `make_train_step` builds the one
train step every family shares (donated state, batch sharded over 'data', non-finite updates
never applied) around a family's `loss(params, batch, rng, step)`; `ctr_loss` is the CTR and
multi-scenario loss, and `make_steps` the (train_step, predict) pair the benchmarks use.

Model state: a model with non-trainable variable collections besides 'params' (STAR's
per-scenario running statistics, 'batch_stats') keeps them in `state['model_state']`
({collection: tree}); the train step passes them to the loss as a fifth argument and stores
the collections it returns, under the same non-finite rule as the parameters, so they are
checkpointed and resumed with the rest of the state. Models without such collections have no
'model_state' key: their state and checkpoints are unchanged.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax.train import regularization


def model_state_init(model, dummy_batch):
  """rng -> the model's variable collections other than 'params' (e.g. {'batch_stats': ...}),
  or None when it has none (`jax.eval_shape`, nothing is computed)."""
  def init(rng):
    return {k: v for k, v in model.init(rng, dummy_batch).items() if k != 'params'}
  return init if jax.eval_shape(init, jax.random.PRNGKey(0)) else None


def create_state(model, tx, mesh, sharding_rules, dummy_batch, seed):
  """`create_state_from` for a model whose variables come from `model.init(rng, dummy_batch)`."""
  return create_state_from(lambda rng: model.init(rng, dummy_batch)['params'], tx, mesh,
                           sharding_rules, seed, model_state_init(model, dummy_batch))


def create_state_from(init_params, tx, mesh, sharding_rules, seed, init_model_state=None):
  """Initialises the train state directly into its shardings; returns (state, shardings).

  `init_model_state`: rng -> the model's non-trainable collections (`model_state_init`), kept
  replicated in `state['model_state']`; None = no such key.

  Shapes first (`jax.eval_shape(init_params)`, carrying the logical axis names of the
  parameters), then the logical names are mapped to mesh axes by `sharding_rules` (e.g.
  ('vocab', 'model') row-shards embedding tables) and the state is materialised by a jit with
  those out_shardings: no device ever holds an unsharded copy. Parameters without logical
  names are replicated.
  """
  replicated = NamedSharding(mesh, P())
  rules = tuple(tuple(r) for r in sharding_rules)
  abstract_params = jax.eval_shape(init_params, jax.random.PRNGKey(0))
  param_sharding = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_params), mesh, rules)

  def init_state(rng):
    params = nn.unbox(init_params(jax.random.fold_in(rng, 0)))
    return {'params': params, 'opt_state': tx.init(params), 'step': jnp.zeros((), jnp.int32),
            'rng': jax.random.fold_in(rng, 1),
            'nonfinite': jnp.zeros((), jnp.int32),              # updates skipped as non-finite
            'first_nonfinite': jnp.full((), -1, jnp.int32),     # step of the first one, -1 = none
            'lr_scale': jnp.ones((), jnp.float32),              # reduce-on-plateau factor so far
            **({'model_state': nn.unbox(init_model_state(jax.random.fold_in(rng, 0)))}
               if init_model_state is not None else {})}

  abstract_state = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  # Optimizer moments (Adam mu/nu, ...) take the shardings of the parameters they mirror.
  opt_sharding = _match_shardings(abstract_state['opt_state'], abstract_state['params'],
                                  param_sharding, replicated)
  state_sharding = {'params': param_sharding, 'opt_state': opt_sharding, 'step': replicated,
                    'rng': replicated, 'nonfinite': replicated, 'first_nonfinite': replicated,
                    'lr_scale': replicated}
  if init_model_state is not None:
    state_sharding['model_state'] = jax.tree.map(lambda _: replicated,
                                                 abstract_state['model_state'])
  state = jax.jit(init_state, out_shardings=state_sharding)(jax.random.PRNGKey(seed))
  return state, state_sharding


def ctr_loss(model, embed_l2=0.0, embed_l2_rows='table'):
  """The CTR loss `loss(params, batch, rng, step) -> (loss, metrics)` of a model mapping a
  batch to (logits [B], aux): binary cross-entropy + the model's `aux['losses']` + the
  embedding penalty of `regularization.embed_penalty` when `embed_l2` > 0 (BARS/FuxiCTR
  semantics; `embed_l2_rows`). `aux['metrics']` (optional) are logged as `train/<name>`.

  With `model_state` (the model's other collections, e.g. STAR's 'batch_stats') the model runs
  with them mutable and the loss returns (loss, (metrics, updated model_state))."""

  def loss(params, batch, rng, step, model_state=None):
    # Models with a schedule of their own (UniMixer's temperature annealing) read the step.
    batch = dict(batch, step=step)
    if model_state is None:
      logits, aux = model.apply({'params': params}, batch, train=True, rngs={'dropout': rng})
    else:
      (logits, aux), model_state = model.apply(
          {'params': params, **model_state}, batch, train=True, rngs={'dropout': rng},
          mutable=list(model_state))
    bce = optax.sigmoid_binary_cross_entropy(logits, batch['label']).mean()
    terms = {f'train/loss/{k}': v for k, v in sorted(aux.get('losses', {}).items())}
    total = bce + sum(terms.values())
    if embed_l2:  # no L2 term at all (not 0 * ...) when it is off
      terms['train/loss/embed_l2'] = regularization.embed_penalty(
          params, embed_l2, embed_l2_rows, batch.get('cat'), getattr(model, 'vocab_sizes', ()),
          getattr(model, 'table_pad', 8))
      total = total + terms['train/loss/embed_l2']
    metrics = {'train/loss': bce, 'label/mean': batch['label'].mean(),
               'prediction/mean': jax.nn.sigmoid(logits).mean(), **terms,
               **{f'train/{k}': v for k, v in sorted(aux.get('metrics', {}).items())}}
    return (total, metrics) if model_state is None else (total, (metrics, model_state))

  return loss


def make_train_step(loss_fn, tx, mesh, state_sharding, stop_on_nonfinite=True):
  """The jitted train step of any family: `train_step(state, batch) -> (state, metrics)`.

  `loss_fn(params, batch, rng, step) -> (loss, metrics)`; the step adds the total loss and the
  gradient norm to the metrics, donates the old state, takes the batch sharded over 'data' and
  parameters as in `state_sharding`. A non-finite loss or gradient never reaches the
  parameters: the update is skipped and counted (`state['nonfinite']`, the first such step in
  `state['first_nonfinite']`); with `stop_on_nonfinite` every later update is skipped too, so
  the state stays at the last good step while the host stops the run. A state with
  'model_state' calls `loss_fn(params, batch, rng, step, model_state) -> (loss, (metrics,
  model_state))` and keeps the returned collections under the same rule.
  """
  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, donate_argnums=(0,), out_shardings=(state_sharding, replicated))
  def train_step(state, batch):
    rng = jax.random.fold_in(state['rng'], state['step'])
    extra = (state['model_state'],) if 'model_state' in state else ()
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], batch, rng, state['step'], *extra)
    if extra:
      metrics, model_state = metrics
    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    # Learning rates times the reduce-on-plateau scale (exactly 1.0 until a plateau).
    updates = jax.tree.map(lambda u: u * state['lr_scale'].astype(u.dtype), updates)
    params = optax.apply_updates(state['params'], updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    apply = finite & ~(stop_on_nonfinite & (state['nonfinite'] > 0))
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(apply, n, o), new, old)
    new_state = {
        'params': keep(params, state['params']), 'opt_state': keep(opt_state, state['opt_state']),
        'step': state['step'] + 1, 'rng': state['rng'], 'lr_scale': state['lr_scale'],
        'nonfinite': state['nonfinite'] + (~finite).astype(jnp.int32),
        'first_nonfinite': jnp.where(~finite & (state['first_nonfinite'] < 0), state['step'],
                                     state['first_nonfinite'])}
    if extra:
      new_state['model_state'] = keep(model_state, state['model_state'])
    return new_state, {**metrics, 'train/total_loss': loss, 'train/grad_norm': grad_norm}

  return train_step


def make_predict(model, mesh, variables=False):
  """predict(params, batch, step=None) -> logits [B], sharded over 'data' (CTR models).

  `variables`: predict takes the Flax variables ({'params': ..., 'batch_stats': ...}) in
  place of the parameters (models with a model state, evaluated with its running values)."""
  batch_sharding = NamedSharding(mesh, P('data'))

  @functools.partial(jax.jit, out_shardings=batch_sharding)
  def predict(params, batch, step=None):
    """Logits of a batch; `step` (the training step of `params`) for models with schedules."""
    if step is not None:
      batch = dict(batch, step=step)
    return model.apply(params if variables else {'params': params}, batch)[0]

  return predict


def make_steps(model, tx, mesh, state_sharding, embed_l2=0.0, stop_on_nonfinite=True,
               embed_l2_rows='table'):
  """(train_step, predict) of a CTR model: `make_train_step` over `ctr_loss`, `make_predict`."""
  train_step = make_train_step(ctr_loss(model, embed_l2, embed_l2_rows), tx, mesh,
                               state_sharding, stop_on_nonfinite)
  return train_step, make_predict(model, mesh)


def _match_shardings(opt_abstract, params_abstract, param_sharding, replicated):
  """Optimizer-state leaves get the sharding of the parameter they mirror, else replicated.

  A leaf mirrors a parameter when the parameter's dict-key path is a suffix of the leaf's
  (e.g. `...inner_states['embed'].inner_state[0].mu['tokenizer']['embedding']`) and the
  shapes agree; this survives optax wrappers such as `multi_transform`'s masked states.
  """
  def names(path):
    return tuple(k.key for k in path if isinstance(k, jax.tree_util.DictKey))

  shardings = jax.tree.leaves(param_sharding, is_leaf=lambda x: isinstance(x, NamedSharding))
  index = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(params_abstract), shardings):
    index[names(path)] = (leaf.shape, sharding)

  def assign(path, leaf):
    key = names(path)
    for i in range(len(key)):
      shape, sharding = index.get(key[i:], (None, None))
      if sharding is not None and shape == getattr(leaf, 'shape', None):
        return sharding
    return replicated

  return jax.tree_util.tree_map_with_path(assign, opt_abstract)
