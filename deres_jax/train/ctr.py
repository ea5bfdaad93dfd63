"""The CTR ranking family (`config.family = 'ctr'`): any model of `deres_jax.models`.

A model maps a batch {label, dense, cat} to (logits [B], aux); it trains on binary
cross-entropy plus its `aux['losses']` (train/step.py `ctr_loss`), is validated by exact AUC
and logloss over the whole split (`eval.monitor` 'auc' up or 'logloss' down) and reports the
test metrics beside the Bayes-optimal ones when the data are synthetic. The loop is
train/trainer.py; this module only says what is CTR-specific.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax import config as config_lib
from deres_jax import data as data_lib
from deres_jax import models
from deres_jax.data import iterator as iterator_lib
from deres_jax.train import family as family_lib
from deres_jax.train import metrics as metrics_lib
from deres_jax.train import report
from deres_jax.train import regularization
from deres_jax.train import step as step_lib
from deres_jax.train import trainer


# Field names looked for when eval.user_field / eval.item_field are '' (auto).
USER_FIELDS = ('user_id', 'user', 'uid', 'userid')
ITEM_FIELDS = ('item_id', 'item', 'iid', 'itemid')


def metric_field(schema, name: str, auto: tuple, key: str) -> int | None:
  """Column of the categorical field `name` ('' = the first of `auto` present, 'none' = off)."""
  cats = tuple(schema.cat_names)
  if name == 'none':
    return None
  if not name:
    return next((cats.index(n) for n in auto if n in cats), None)
  if name not in cats:
    raise ValueError(f"config.{key}={name!r} is not a categorical field of the data "
                     f"({', '.join(cats) or 'none'}); name one of them, or 'none'.")
  return cats.index(name)


def group_metrics(split, logits, user_col, item_col, tail) -> dict:
  """GAUC over users and AUC on tail-item rows (`tail`: that split's bool mask), where available."""
  out = {}
  if user_col is not None:
    out['gauc'] = metrics_lib.gauc(split['label'], logits, split['cat'][:, user_col])
  if item_col is not None and tail is not None:
    out['tail_auc'] = (metrics_lib.auc(split['label'][tail], logits[tail]) if tail.any()
                       else float('nan'))
    out['tail_rows'] = int(tail.sum())
  return out


def evaluate(predict_fn, params, split, batch_size, batch_sharding, step=None, groups=None):
  """Exact AUC and logloss of a model over a whole split (`step`: the training step of params),
  plus GAUC / tail-item AUC when `groups` = (user column, item column, tail mask) says so."""
  outs = []
  if step is not None:  # an explicit transfer (the loop runs under a transfer guard)
    step = jax.device_put(np.int32(step), NamedSharding(batch_sharding.mesh, P()))
  for batch, _ in iterator_lib.eval_batches(split, batch_size, jax.process_index(),
                                            jax.process_count()):
    outs.append(predict_fn(params, iterator_lib.to_global(batch, batch_sharding), step))
  n = len(split['label'])
  logits = np.concatenate([trainer.to_host(o) for o in outs])[:n]
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  out = {'auc': metrics_lib.auc(split['label'], logits),
         'logloss': metrics_lib.logloss_from_logits(split['label'], logits),
         'prediction/mean': float(probs.mean()), 'label/mean': float(split['label'].mean())}
  if groups is not None:
    out.update(group_metrics(split, logits, *groups))
  return out


def oracle_metrics(split):
  """Bayes-optimal metrics from the true probabilities (synthetic data only)."""
  if 'prob' not in split:
    return {}
  return {'auc': metrics_lib.auc(split['label'], split['prob']),
          'logloss': metrics_lib.logloss(split['label'], split['prob'])}


def build(config, ds, workdir, mesh) -> family_lib.Task:
  """The CTR task of one run: model, loss, exact validation/test metrics, summary fields."""
  del workdir
  ds = data_lib.apply_options(ds, config.data)   # a preloaded dataset shared by differing rows
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  train_split = ds.splits['train']
  embed_l2 = regularization.effective_embed_l2(config.optim, len(train_split['label']))
  columns = {k: v for k, v in train_split.items() if k in iterator_lib.TRAIN_COLUMNS}
  dummy = {k: v[:2] for k, v in columns.items()}
  predict = step_lib.make_predict(model, mesh)
  batch_sharding = NamedSharding(mesh, P('data'))

  user_col = metric_field(ds.schema, config.eval.user_field, USER_FIELDS, 'eval.user_field')
  item_col = metric_field(ds.schema, config.eval.item_field, ITEM_FIELDS, 'eval.item_field')
  tails = {}
  if item_col is not None:
    train_items = ds.splits['train']['cat'][:, item_col]
    tails = {name: metrics_lib.tail_mask(train_items, ds.splits[name]['cat'][:, item_col],
                                         config.eval.tail_fraction) for name in ('val', 'test')}

  def evaluate_split(params, split, step):
    return evaluate(predict, params, ds.splits[split], config.eval.batch_size, batch_sharding, step,
                    groups=(user_col, item_col, tails.get(split)))

  def summary(params, step):
    val, test = evaluate_split(params, 'val', step), evaluate_split(params, 'test', step)
    oracle = oracle_metrics(ds.splits['test'])
    sizes = models.param_counts(params)
    return {'model': config.model.name, 'connector': config.model.get('connector'),
            'dataset': ds.source, 'num_params': sizes['total'],
            'embedding_params': sizes['embedding'], 'dense_params': sizes['dense'],
            'flops_per_example': model.flops_per_example()['total'],
            'test_auc': test['auc'], 'test_logloss': test['logloss'],
            'val_auc': val['auc'], 'val_logloss': val['logloss'],
            'oracle_auc': oracle.get('auc'), 'oracle_logloss': oracle.get('logloss'),
            'embed_l2': embed_l2,
            **{f'{k}_{m}': v[m] for k, v in (('test', test), ('val', val))
               for m in ('gauc', 'tail_auc') if m in v}}

  return family_lib.Task(
      init=lambda rng: model.init(rng, dummy)['params'],
      loss=step_lib.ctr_loss(model, embed_l2, config.optim.embed_l2_rows),
      train=columns, evaluate=evaluate_split, summary=summary,
      higher_is_better=config.eval.monitor == 'auc')


def after_training(config, workdir, summary, dataset=None) -> dict:
  """config.baseline.logreg: a logistic regression on the same data, reported beside."""
  if config.baseline.logreg:
    summary = report.add_logreg_baseline(config, workdir, summary, dataset=dataset)
  return summary


FAMILY = family_lib.Family(
    validate=config_lib.validate,
    load=lambda config: data_lib.load(config.data),
    build=build,
    report=report.print_summary,
    apply_overrides=config_lib.apply_model_overrides,
    after_training=after_training)
