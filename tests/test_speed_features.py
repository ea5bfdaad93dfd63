"""One-device speed features: no implicit transfers in the loop, donation, bf16 parity."""
import jax
import numpy as np
import pytest

from deres_jax import data, models
from deres_jax.data import iterator
from deres_jax.train import metric_writer, trainer
from deres_jax.train import step as step_lib
from deres_jax.train.optim import make_optimizer


def _losses(workdir):
  return np.array([r['train/loss'] for r in metric_writer.read(f'{workdir}/metrics.jsonl')
                   if 'train/loss' in r])


class _HostBatches(iterator.Prefetch):
  """A broken prefetcher that hands the step numpy batches (an implicit transfer per step)."""

  def __init__(self, batches, sharding, size=2):
    del sharding, size
    self._it = iter(batches)
    self._stop = None

  def __next__(self):
    return next(self._it)

  def close(self):
    pass


def test_loop_has_no_implicit_transfers(tiny_config, tmp_path, monkeypatch):
  c = tiny_config
  ds = data.load(c.data)
  # The real loop runs under transfer_guard('disallow') (the default) ...
  assert c.train.transfer_guard == 'disallow'
  trainer.train_and_evaluate(c, str(tmp_path / 'ok'), dataset=ds)
  # ... and the guard is live: an implicit host-to-device copy inside the loop is an error.
  monkeypatch.setattr(iterator, 'Prefetch', _HostBatches)
  with pytest.raises(Exception, match='Disallowed host-to-device transfer'):
    trainer.train_and_evaluate(c, str(tmp_path / 'bad'), dataset=ds)
  c.train.transfer_guard = 'allow'
  trainer.train_and_evaluate(c, str(tmp_path / 'allowed'), dataset=ds)
  # Host batches reach the step unsharded, so XLA may sum in another order: float32-level agreement.
  np.testing.assert_allclose(_losses(tmp_path / 'allowed'), _losses(tmp_path / 'ok'), rtol=1e-5)


def test_train_step_donates_the_old_state(tiny_config):
  c = tiny_config
  ds = data.load(c.data)
  mesh = trainer.make_mesh(c.mesh)
  model = models.build(c.model, ds.schema)
  tx = make_optimizer(c.optim, 10)
  batch = {k: v[:256] for k, v in ds.splits['train'].items() if k in iterator.TRAIN_COLUMNS}
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, batch, 0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  old = state
  state, _ = step(state, iterator.to_global(batch, sharding))
  assert all(x.is_deleted() for x in jax.tree.leaves(old['params']))  # buffers were reused
  assert not any(x.is_deleted() for x in jax.tree.leaves(state['params']))


def test_prefetch_yields_the_same_batches(tiny_config):
  ds = data.load(tiny_config.data)
  mesh = trainer.make_mesh(tiny_config.mesh)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  plain = iterator.BatchIterator(ds.splits['train'], 256, seed=3)
  with iterator.Prefetch(iterator.BatchIterator(ds.splits['train'], 256, seed=3), sharding) as pre:
    for _ in range(20):  # past an epoch boundary (16 batches per epoch)
      got = next(pre)
      want = next(plain)
      assert got['cat'].sharding.spec[0] == 'data'
      np.testing.assert_array_equal(np.asarray(got['cat']), want['cat'])


def test_bfloat16_compute_matches_float32(tiny_config, tmp_path):
  """bf16 activations, float32 parameters: losses within 2% of float32 over 24 steps."""
  c = tiny_config
  c.train.update(num_steps=24, log_every=4)
  ds = data.load(c.data)
  trainer.train_and_evaluate(c, str(tmp_path / 'f32'), dataset=ds)
  c.compute_dtype = 'bfloat16'
  s = trainer.train_and_evaluate(c, str(tmp_path / 'bf16'), dataset=ds)
  f32, bf16 = _losses(tmp_path / 'f32'), _losses(tmp_path / 'bf16')
  assert not np.array_equal(f32, bf16)  # bf16 really ran
  np.testing.assert_allclose(bf16, f32, rtol=0.02)
  assert np.isfinite(s['test_auc'])
