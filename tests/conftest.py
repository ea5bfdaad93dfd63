"""Test set-up: 8 virtual CPU devices, so sharded code is tested for real.

XLA_FLAGS must be set before jax is imported anywhere, hence at the top of conftest.
"""
import os

# The collective timeouts: XLA:CPU runs the 8 virtual devices as threads that meet at every
# collective, and aborts the process ("Termination timeout for all gather ... only 7 arrived")
# when one thread is late by the default 40 s, which a loaded 2-core machine can reach.
# Compile fast: the tests run tiny programs, so XLA:CPU's LLVM optimisation costs more than it
# saves (measured: test_multiscenario_models + test_model_zoo 297 s -> 202 s); XLA:CPU's fusion
# emitters off halve the compile time again (MI-DPG forward + gradient, 4 programs: 12.7 s -> 6.7 s;
# test_multiscenario_models + test_spine 222 s -> 189 s) for ~10 % slower steps of the few tests
# that train for long. Subprocesses started by the tests get the same flags through
# DERES_TEST_XLA_FLAGS.
os.environ['DERES_TEST_XLA_FLAGS'] = ('--xla_backend_optimization_level=0'
                                     ' --xla_llvm_disable_expensive_passes=true'
                                     ' --xla_cpu_use_fusion_emitters=false')
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + os.environ['DERES_TEST_XLA_FLAGS'] +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_cpu_collective_timeout_seconds=300'
                           ' --xla_cpu_collective_call_terminate_timeout_seconds=300').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# One BLAS thread per process: the xdist workers (and their subprocesses) already fill the cores,
# and OpenBLAS's threads spin-wait for a busy core: measured on this 2-core machine under load,
# a 638 x 638 `np.linalg.eigh` (the genrec attribute features) took 6.7 s with 2 threads and
# 0.1 s with 1, so every tiny genrec run spent ~10-18 s there.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
os.environ.setdefault('OMP_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')

import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Many tests train the same tiny model several times (resume, 1 vs 8 devices, a CLI subprocess
# after an in-process run): a persistent compilation cache, fresh for each session and shared by
# the xdist workers (they inherit the controller's environment) and the tests' subprocesses,
# compiles each distinct step function once.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='deres_jax_xla_cache_'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))


def pytest_configure(config):
  del config
  assert jax.device_count() == 8, f'expected 8 virtual CPU devices, got {jax.devices()}'
  try:  # numpy may have loaded its BLAS before this file set the thread count (a plugin imported it)
    import threadpoolctl  # pylint: disable=g-import-not-at-top
    threadpoolctl.threadpool_limits(1)
  except ImportError:
    pass


@pytest.fixture
def tiny_config():
  """configs/tiny.py (small synthetic data, a tiny DeRes), shortened to 12 steps."""
  from deres_jax.config import load_file  # pylint: disable=g-import-not-at-top
  c = load_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                             'tiny.py'))
  c.train.update(num_steps=12, log_every=3)
  c.eval.every_steps = 6
  c.ckpt.update(every_steps=6, max_to_keep=2)
  return c
