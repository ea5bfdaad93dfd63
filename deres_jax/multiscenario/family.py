"""The multi-scenario family (`config.family = 'multiscenario'`): MI-DPG and its baselines.

What is specific to it, for the one training loop (train/trainer.py): the models of
`multiscenario.models` take the CTR batch plus a `scenario` column and train on the CTR loss
(binary cross-entropy + `aux['losses']`, e.g. MI-DPG's MI term: train/step.py `ctr_loss`);
validation is per scenario (AUC, logloss, sample-weighted AUC `wauc`, the MI estimate), and
the summary splits the parameters into embedding, shared and scenario-specific ones.
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from deres_jax.config import ConfigError
from deres_jax.data import iterator as iterator_lib
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import data as data_lib
from deres_jax.multiscenario import load as load_data
from deres_jax.multiscenario import metrics as ms_metrics
from deres_jax.multiscenario import models
from deres_jax.train import family as family_lib
from deres_jax.train import regularization
from deres_jax.train import step as step_lib
from deres_jax.train import trainer


def evaluate(predict, mi_fn, params, split, names, batch_size, sharding, step):
  """Per-scenario metrics of one split (+ the mean MI estimate over its batches)."""
  step = jax.device_put(np.int32(step), NamedSharding(sharding.mesh, P()))
  outs, mis = [], []
  for batch, _ in iterator_lib.eval_batches(split, batch_size, jax.process_index(),
                                            jax.process_count()):
    batch = iterator_lib.to_global(batch, sharding)
    outs.append(predict(params, batch, step))
    mis.append(mi_fn(params, batch))
  logits = np.concatenate([trainer.to_host(o) for o in outs])[:len(split['label'])]
  result = ms_metrics.by_scenario(split['label'], logits, split['scenario'], names)
  result['mi'] = float(np.mean(jax.device_get(mis)))  # padded last batch included: an estimate
  return result


def build_model(config, ds):
  """The run's model: `config.model` plus the fields the code sets from the data and the run
  (MI-DPG's scenario prior, AdaSparse's annealing length); serving rebuilds it the same way."""
  dtype = jnp.bfloat16 if config.compute_dtype == 'bfloat16' else jnp.float32
  model = models.build(config.model, ds.schema, dtype=dtype)
  if hasattr(model, 'scenario_prior'):
    # MI-DPG's DV/JSD bounds use the scenario frequencies of the training rows (mi.py).
    counts = np.bincount(ds.splits['train']['scenario'], minlength=ds.schema.num_scenarios + 1)
    counts = counts[:ds.schema.num_scenarios].astype(np.float64)
    model = model.clone(scenario_prior=tuple(float(c) for c in counts / max(counts.sum(), 1)))
  if getattr(model, 'anneal_steps', None) == 0:
    # AdaSparse anneals α over the run's training steps unless told otherwise.
    model = model.clone(anneal_steps=trainer.schedule(config, len(ds.splits['train']['label']))[0])
  return model


def build(config, ds, workdir, mesh) -> family_lib.Task:
  """The multi-scenario task of one run."""
  if jax.process_index() == 0:   # the raw-value vocabularies, for export (serving on raw values)
    data_lib.save_vocab(workdir, ds)
  model = build_model(config, ds)
  columns = {k: v for k, v in ds.splits['train'].items() if k in iterator_lib.TRAIN_COLUMNS}
  embed_l2 = regularization.effective_embed_l2(config.optim, len(ds.splits['train']['label']))
  dummy = {k: v[:2] for k, v in columns.items()}
  # STAR with partition_norm='batch' has running statistics ('batch_stats'): the loop carries
  # them as the model state, and evaluation gets the variables {'params', 'batch_stats'}.
  model_state = step_lib.model_state_init(model, dummy)
  as_variables = (lambda w: w) if model_state else (lambda w: {'params': w})
  predict = step_lib.make_predict(model, mesh, variables=model_state is not None)
  mi_fn = jax.jit(lambda params, batch: model.apply(as_variables(params), batch)[1].get(
      'mi', jnp.zeros(())))
  sharding = NamedSharding(mesh, P('data'))

  def evaluate_split(params, split, step):
    return evaluate(predict, mi_fn, params, ds.splits[split], ds.scenario_names,
                    config.eval.batch_size, sharding, step)

  def flat(params, split, step):  # metrics.jsonl: eval/auc, eval/wauc, eval/<scenario>/auc, ...
    result = evaluate_split(params, split, step)
    return {k.partition('/')[2]: v for k, v in ms_metrics.flat(result, 'x').items()}

  def summary(params, step):
    test = evaluate_split(params, 'test', step)
    test_split = ds.splits['test']
    oracle = (ms_metrics.by_scenario(test_split['label'], _logit(test_split['prob']),
                                     test_split['scenario'], ds.scenario_names)
              if 'prob' in test_split else None)
    return {'model': config.model.name, 'dataset': ds.source, 'target': ds.target,
            'params': models.param_counts(as_variables(params)['params']),
            'flops_per_example': model.flops_per_example()['total'], 'embed_l2': embed_l2,
            'test': test, 'oracle': oracle, 'data_notes': ds.notes}

  return family_lib.Task(
      init=lambda rng: model.init(rng, dummy)['params'],
      loss=step_lib.ctr_loss(model, embed_l2, config.optim.embed_l2_rows),
      train=columns, evaluate=flat, summary=summary,
      higher_is_better=config.eval.monitor != 'logloss', model_state=model_state)


def _logit(p):
  p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
  return np.log(p) - np.log1p(-p)


def apply_model_flags(config, pairs):
  """--config.model.<field>=<text> pairs (launch/train.py): name first, then the fields."""
  import ast  # pylint: disable=g-import-not-at-top
  with config.unlocked():
    for key, text in pairs:
      if key == 'name' and text != config.model.name:
        try:
          old, new = config.model, models.model_config(text)
        except ValueError as e:
          raise ConfigError(str(e)) from None
        defaults = models.fields(old.name)
        for k in new:  # a field with the same default means the same in both (sizes carry)
          if k != 'name' and k in old and k in defaults and defaults[k][0] == new[k]:
            new[k] = old[k]
        config.model = new
    for key, text in pairs:
      if key == 'name':
        continue
      if key not in config.model:
        raise ConfigError(f'model {config.model.name!r} has no field {key!r}; its fields are '
                          f'{list(models.fields(config.model.name))}.')
      default = config.model[key]
      try:
        value = text if isinstance(default, str) else ast.literal_eval(text)
      except (ValueError, SyntaxError):
        raise ConfigError(f'--config.model.{key}={text!r} does not parse as a '
                          f'{type(default).__name__}.') from None
      with config.model.ignore_type():
        config.model[key] = tuple(value) if isinstance(value, list) else value
  return config


def print_summary(summary: dict):
  test, oracle = summary['test'], summary['oracle']
  print(f"Test split of {summary['dataset']} (target {summary['target']}), model "
        f"{summary['model']}:")
  print(f"{'scenario':>12} {'rows':>7} {'AUC':>7} {'logloss':>8} {'oracle AUC':>11}")
  for name, m in test['scenarios'].items():
    o = oracle['scenarios'][name]['auc'] if oracle else float('nan')
    print(f"{name:>12} {m['rows']:>7} {m['auc']:>7.4f} {m['logloss']:>8.4f} {o:>11.4f}")
  print(f"{'overall':>12} {'':>7} {test['auc']:>7.4f} {test['logloss']:>8.4f} "
        f"{oracle['auc'] if oracle else float('nan'):>11.4f}")
  print(f"weighted AUC {test['wauc']:.4f}, MI estimate {test['mi']:.4f}, unseen-scenario rows "
        f"{test['unseen_rows']}, params {summary['params']}")


FAMILY = family_lib.Family(
    validate=config_lib.validate,
    load=lambda config: load_data(config.data),
    build=build,
    report=print_summary,
    apply_overrides=apply_model_flags)
