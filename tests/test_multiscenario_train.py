"""Multi-scenario training: every model learns on the Douban sample, the trainer resumes
exactly, 1 and 8 devices agree, launch flags switch models."""
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

from deres_jax.data import iterator as iterator_lib
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import family as ms_family
from deres_jax.multiscenario import models, samples, synthetic
from deres_jax.train import trainer
from deres_jax.train.optim import make_optimizer
from deres_jax.train.step import create_state, make_steps

DATA = os.path.join(os.path.dirname(__file__), 'data', 'multiscenario')


@pytest.fixture(scope='module')
def douban():
  return samples.load('douban', {'all': os.path.join(DATA, 'douban_sample.csv')})


@pytest.fixture(scope='module')
def syn():
  return synthetic.generate(synthetic.MultiScenarioSpec(num_train=2048, num_val=512, num_test=512))


def _config(name='midpg', steps=12):
  c = config_lib.base_config()
  c.model = models.model_config(name, embed_dim=4, hidden=(16, 8))
  c.train.update(batch_size=128, num_steps=steps, log_every=4)
  c.eval.update(every_steps=6, batch_size=256, restore_best=False)
  c.ckpt.update(every_steps=6)
  return c


@pytest.mark.parametrize('name,backbone', [(n, 'mlp') for n in models.MODELS] + [('midpg', 'deres')])
def test_every_model_learns_the_douban_sample(name, backbone, douban):
  """30 steps of the CTR train step on one batch of real rows: the loss falls."""
  mesh = trainer.make_mesh((('data', -1), ('model', 1)), jax.devices()[:2])
  cfg = _config(name)
  cfg.model.backbone = backbone
  cfg.optim.learning_rate = cfg.optim.embed_learning_rate = 0.01
  model = models.build(cfg.model, douban.schema)
  tx = make_optimizer(cfg.optim, 30)
  split = douban.splits['train']
  batch = {k: v[:256] for k, v in split.items() if k in iterator_lib.TRAIN_COLUMNS}
  state, shardings = create_state(model, tx, mesh, cfg.sharding_rules, batch, 0)
  step, _ = make_steps(model, tx, mesh, shardings)
  device_batch = iterator_lib.to_global(batch, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec('data')))
  losses = []
  for _ in range(30):
    state, m = step(state, device_batch)
    losses.append(float(m['train/loss']))
  assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_run_reports_per_scenario(tmp_path, syn):
  # Exact resume (SIGTERM mid-run, the same summary and metrics lines): tests/test_spine.py.
  straight = trainer.train_and_evaluate(_config(steps=12), str(tmp_path / 'a'), dataset=syn)
  assert straight['steps'] == 12 and straight['family'] == 'multiscenario'
  # Per-scenario metrics, weighted AUC, MI estimate, oracle and the parameter split.
  test = straight['test']
  assert set(test['scenarios']) == set(syn.scenario_names) and np.isfinite(test['wauc'])
  assert np.isfinite(test['mi']) and straight['oracle']['auc'] > 0.7
  p = straight['params']
  assert p['scenario'] > 0 and p['shared'] > 0 and p['total'] == p['embedding'] + p['scenario'] + p['shared']


def _collectives(name, syn, **fields):
  """Collective ops of the compiled 8-device train step of a tiny `name`."""
  mesh = trainer.make_mesh((('data', -1), ('model', 1)))
  cfg = _config(name)
  cfg.model.update(fields)
  model = models.build(cfg.model, syn.schema)
  tx = make_optimizer(cfg.optim, 10)
  batch = {k: v[:64] for k, v in syn.splits['train'].items() if k in iterator_lib.TRAIN_COLUMNS}
  state, shardings = create_state(model, tx, mesh, cfg.sharding_rules, batch, 0)
  step, _ = make_steps(model, tx, mesh, shardings)
  batch = iterator_lib.to_global(batch, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data')))
  hlo = step.lower(state, batch).compile().as_text()
  return re.findall(r'\b(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(', hlo)


def test_midpg_train_step_has_one_collective(syn):
  """The abort's regression test. The first MI-DPG scored in-batch negatives: two independent
  all-gathers in the step, which XLA:CPU's 8 device threads entered in different orders on a
  busy CPU ("Termination timeout for all gather", Fatal Python error: Aborted). The MI over
  the S scenario candidates keeps the step at the gradient all-reduce alone, in both forms."""
  assert _collectives('midpg', syn) == ['all-reduce']
  assert _collectives('midpg', syn, context='features') == ['all-reduce']


def test_launch_flags_switch_models_and_reject_bad_fields():
  c = ml_collections.ConfigDict(_config().to_dict())
  c = ms_family.apply_model_flags(c, [('name', 'star'), ('aux_hidden', '(8,)')])
  assert c.model.name == 'star' and tuple(c.model.hidden) == (16, 8)  # sizes carry over
  assert tuple(c.model.aux_hidden) == (8,)
  with pytest.raises(ValueError, match="has no field 'rank'"):
    ms_family.apply_model_flags(c, [('rank', '4')])
  c.eval.monitor = 'gauc'
  with pytest.raises(ValueError, match='eval.monitor'):
    config_lib.validate(c)
