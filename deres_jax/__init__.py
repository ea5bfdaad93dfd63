"""deres_jax: DeRes, MI-DPG, CAPSID and their baselines in JAX/Flax (see README.md)."""
from deres_jax import cpu_rng as _cpu_rng

_cpu_rng.install()   # same random bits, faster on CPU (deres_jax/cpu_rng.py)
