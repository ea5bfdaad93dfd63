"""Test set-up: 8 virtual CPU devices, so sharded code is tested for real.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""
import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Many tests train the same tiny model several times (resume, 1 vs 8 devices): a persistent
# compilation cache, fresh for each session, compiles each distinct step function once.
jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='deres_jax_xla_cache_'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)


def pytest_configure(config):
  del config
  assert jax.device_count() == 8, f'expected 8 virtual CPU devices, got {jax.devices()}'


@pytest.fixture
def tiny_config():
  """A config that trains in seconds: small synthetic data, a tiny DeRes."""
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.data.num_train, c.data.num_val, c.data.num_test = 4096, 1024, 1024
  c.data.max_vocab = 1000
  c.model.update(depth=2, width=16, num_heads=2, embed_dim=8, ffn_mult=2, head_hidden=(32,),
                 tokenizer='group', num_tokens=4, block_size=2)
  c.train.update(batch_size=256, num_steps=12, log_every=3, progress=False)
  c.eval.update(every_steps=6, batch_size=512)
  c.ckpt.every_steps = 6
  return c
