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
from deres_jax.train import step as step_lib
from deres_jax.train import trainer


def evaluate(predict_fn, params, split, batch_size, batch_sharding, step=None):
  """Exact AUC and logloss of a model over a whole split (`step`: the training step of params)."""
  outs = []
  if step is not None:  # an explicit transfer (the loop runs under a transfer guard)
    step = jax.device_put(np.int32(step), NamedSharding(batch_sharding.mesh, P()))
  for batch, _ in iterator_lib.eval_batches(split, batch_size, jax.process_index(),
                                            jax.process_count()):
    outs.append(predict_fn(params, iterator_lib.to_global(batch, batch_sharding), step))
  n = len(split['label'])
  logits = np.concatenate([trainer.to_host(o) for o in outs])[:n]
  probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
  return {'auc': metrics_lib.auc(split['label'], logits),
          'logloss': metrics_lib.logloss_from_logits(split['label'], logits),
          'prediction/mean': float(probs.mean()), 'label/mean': float(split['label'].mean())}


def oracle_metrics(split):
  """Bayes-optimal metrics from the true probabilities (synthetic data only)."""
  if 'prob' not in split:
    return {}
  return {'auc': metrics_lib.auc(split['label'], split['prob']),
          'logloss': metrics_lib.logloss(split['label'], split['prob'])}


def build(config, ds, workdir, mesh) -> family_lib.Task:
  """The CTR task of one run: model, loss, exact validation/test metrics, summary fields."""
  del workdir
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  train_split = ds.splits['train']
  columns = {k: v for k, v in train_split.items() if k in iterator_lib.TRAIN_COLUMNS}
  dummy = {k: v[:2] for k, v in columns.items()}
  predict = step_lib.make_predict(model, mesh)
  batch_sharding = NamedSharding(mesh, P('data'))

  def evaluate_split(params, split, step):
    return evaluate(predict, params, ds.splits[split], config.eval.batch_size, batch_sharding, step)

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
            'oracle_auc': oracle.get('auc'), 'oracle_logloss': oracle.get('logloss')}

  return family_lib.Task(
      init=lambda rng: model.init(rng, dummy)['params'],
      loss=step_lib.ctr_loss(model, config.optim.embed_l2, config.optim.embed_l2_rows),
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
