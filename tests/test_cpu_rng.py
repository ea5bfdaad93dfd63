"""The unrolled threefry lowering on CPU draws exactly JAX's own bits (deres_jax/cpu_rng.py)."""
import os
import subprocess
import sys

import numpy as np

import deres_jax  # noqa: F401  (installs the lowering)
from deres_jax import cpu_rng

_DRAW = ("import jax, numpy as np; k = jax.random.key(7); "
         "f = jax.jit(lambda k: (jax.random.bits(k, (301, 7)),"
         " jax.random.bernoulli(jax.random.fold_in(k, 3), 0.9, (50,)),"
         " jax.random.normal(jax.random.split(k)[1], (64,)))); "
         "np.savez(OUT, *[np.asarray(x) for x in f(k)])")


def test_unrolled_threefry_draws_the_same_bits_as_jax(tmp_path):
  assert cpu_rng.install()
  out = {}
  for name, env in (('jax', {'DERES_JAX_ROLLED_THREEFRY': '1'}), ('ours', {})):
    path = str(tmp_path / f'{name}.npz')
    code = ('import deres_jax; from deres_jax import cpu_rng; '
            f"assert cpu_rng.install() is {name == 'ours'}; " + _DRAW.replace('OUT', repr(path)))
    e = dict(os.environ, JAX_PLATFORMS='cpu', **env)
    e.pop('DERES_JAX_ROLLED_THREEFRY', None) if name == 'ours' else None
    subprocess.run([sys.executable, '-c', code], check=True, env=e, timeout=120)
    out[name] = np.load(path)
  for k in out['jax'].files:
    np.testing.assert_array_equal(out['ours'][k], out['jax'][k])
  assert out['jax']['arr_0'].std() > 0
