"""Row-sharded embedding tables on a 2-D ('data', 'model') mesh of 8 CPU devices."""
import jax
import numpy as np
import pytest

from deres_jax import models
from deres_jax.config import base_config
from deres_jax.data import iterator
from deres_jax.data.schema import Schema
from deres_jax.train import step as step_lib
from deres_jax.train import trainer
from deres_jax.train.optim import make_optimizer


def _setup(mesh_shape, rules, vocab=(5000, 37, 800, 12), steps=3):
  c = base_config()
  c.model.update(depth=2, width=16, num_heads=2, embed_dim=8, ffn_mult=2, head_hidden=(16,),
                 tokenizer='group', num_tokens=4, block_size=2)
  schema = Schema(dense_names=('a', 'b'), cat_names=tuple(f'c{i}' for i in range(len(vocab))),
                  vocab_sizes=vocab)
  rng = np.random.default_rng(0)
  n = 256
  batches = [{'label': rng.integers(0, 2, n).astype(np.float32),
              'dense': rng.gamma(1.0, 3.0, (n, 2)).astype(np.float32),
              'cat': np.stack([rng.integers(0, v, n) for v in vocab], 1).astype(np.int32)}
             for _ in range(steps)]
  mesh = trainer.make_mesh((('data', mesh_shape[0]), ('model', mesh_shape[1])))
  model = models.build(c.model, schema)
  # Plain SGD with learning rate 1: each parameter moves by exactly minus its gradient, so
  # comparing parameters after a step compares gradients (Adam would rescale tiny ones).
  c.optim.update(name='sgd', embed_name='sgd', learning_rate=1.0, embed_learning_rate=1.0)
  tx = make_optimizer(c.optim, 10)
  state, shardings = step_lib.create_state(model, tx, mesh, rules, batches[0], seed=0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  return state, step, [iterator.to_global(b, sharding) for b in batches]


def _train(mesh_shape, rules, **kw):
  state, step, batches = _setup(mesh_shape, rules, steps=1, **kw)
  table = state['params']['tokenizer']['embedding']
  shard_rows = {s.data.shape[0] for s in table.addressable_shards}
  losses = []
  for b in batches:
    state, m = step(state, b)
    losses.append((float(m['train/loss']), float(m['train/grad_norm'])))
  params = jax.tree.map(np.asarray, jax.device_get(state['params']))
  return losses, params, shard_rows, table.shape[0]


@pytest.fixture(scope='module')
def replicated_run():
  """The replicated reference, trained once for every mesh shape below."""
  return _train((8, 1), ())


@pytest.mark.parametrize('mesh_shape', [(2, 4), (8, 1), (1, 8)])
def test_row_sharded_tables_match_replicated(mesh_shape, replicated_run):
  ref_losses, ref_params, ref_rows, total = replicated_run
  losses, params, rows, _ = _train(mesh_shape, (('vocab', 'model'),))
  assert max(abs(l[1]) for l in losses) > 1e-3  # non-trivial gradients
  assert ref_rows == {total}                       # replicated: every device holds every row
  assert rows == {total // mesh_shape[1]}          # sharded: each device holds 1/model of them
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-5)  # loss and grad norm
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # so the gradients agree too


def test_lookup_never_gathers_the_whole_table():
  """XLA lowers the row-sharded lookup to a local masked gather + all-reduce over 'model'."""
  state, step, batches = _setup((2, 4), (('vocab', 'model'),))
  total, dim = state['params']['tokenizer']['embedding'].shape
  hlo = step.lower(state, batches[0]).compile().as_text()
  gathers = [l for l in hlo.splitlines() if 'all-gather' in l and f'[{total},{dim}]' in l]
  assert not gathers, gathers[:2]


def test_table_larger_than_one_device_share():
  """A 1M-row table that exceeds an assumed 16 MiB per-device budget trains when row-sharded."""
  budget = 16 << 20
  vocab = (1_000_000, 50, 20)
  state, step, batches = _setup((2, 4), (('vocab', 'model'),), vocab=vocab, steps=1)
  table = state['params']['tokenizer']['embedding']
  assert table.nbytes > budget                     # would not fit replicated
  per_device = max(s.data.nbytes for s in table.addressable_shards)
  assert per_device <= budget and per_device * 4 == table.nbytes
  state, m = step(state, batches[0])
  assert np.isfinite(float(m['train/loss']))


def test_adam_moments_follow_the_table_sharding(tiny_config):
  """Optimizer state mirrors the parameter shardings (no replicated copy of a sharded table)."""
  c = tiny_config
  schema = Schema(cat_names=('a', 'b'), vocab_sizes=(4096, 16))
  mesh = trainer.make_mesh((('data', 2), ('model', 4)))
  model = models.build(c.model, schema)
  batch = {'label': np.zeros(8, np.float32), 'cat': np.ones((8, 2), np.int32)}
  state, _ = step_lib.create_state(model, make_optimizer(c.optim, 10), mesh,
                                  (('vocab', 'model'),), batch, seed=0)
  table = state['params']['tokenizer']['embedding']
  moments = [x for x in jax.tree.leaves(state['opt_state']) if x.shape == table.shape]
  assert len(moments) == 2  # Adam's mu and nu
  for m in moments:
    assert m.sharding.is_equivalent_to(table.sharding, table.ndim)
