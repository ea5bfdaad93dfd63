"""Faster dropout on CPU: JAX's threefry random bits lowered without a loop.

On the CPU backend JAX lowers the threefry2x32 hash (every `jax.random` draw, so every dropout
mask) as a rolled loop over its 5 round groups, which XLA:CPU runs as a `while` with a copy of
the whole state per iteration; on accelerators the same hash is lowered unrolled. `install()`
registers that unrolled lowering for CPU too: the same algorithm, so the **same bits** (tested),
measured 2-2.5x faster to draw and about 2x faster to compile on this 2-core machine, which
makes a dropout-heavy train step (TIGER: 22 dropout sites) about 1.5x faster
(`benchmarks/bench_genrec_train.py`).

It uses JAX internals (`jax._src.random.threefry2x32`); if they move, `install()` warns once and
changes nothing. `deres_jax` calls it on import; set DERES_JAX_ROLLED_THREEFRY=1 to keep JAX's
lowering.
"""
import os
import warnings

_installed = None


def install() -> bool:
  """Registers the unrolled threefry lowering for the CPU platform; True when it is in place."""
  global _installed
  if _installed is None:
    _installed = (os.environ.get('DERES_JAX_ROLLED_THREEFRY', '') in ('', '0')) and use(unrolled=True)
  return _installed


def use(unrolled: bool) -> bool:
  """Registers the unrolled (True) or JAX's rolled (False) CPU lowering for functions jitted from
  now on (benchmarks compare both in one process); False if JAX's internals moved."""
  try:
    from jax._src.interpreters import mlir  # pylint: disable=g-import-not-at-top
    from jax._src.random import threefry2x32 as threefry  # pylint: disable=g-import-not-at-top
    rule = threefry._threefry2x32_lowering_rule if unrolled else threefry._threefry2x32_cpu_lowering_rule  # pylint: disable=protected-access
    mlir.register_lowering(threefry.threefry2x32_p, rule, platform='cpu')
  except (ImportError, AttributeError) as e:  # JAX moved its internals: keep its own lowering
    warnings.warn(f'deres_jax.cpu_rng: JAX internals changed ({e}); dropout on CPU keeps the rolled '
                  'threefry lowering (correct, slower).', stacklevel=2)
    return False
  return True
