"""Multi-process (multi-host) start-up: one `jax.distributed.initialize` call, when needed.

Each process then sees every device of the job (`jax.devices()`), owns `jax.local_devices()`,
reads only its slice of each global batch (`BatchIterator(process_index=...)` +
`jax.make_array_from_process_local_data`), and process 0 alone writes metrics and summaries;
Orbax coordinates checkpoint writes across processes itself.
"""
import os

import jax


def _cluster_detected() -> str:
  """Name of a cluster environment that jax.distributed.initialize() can read, or ''."""
  if int(os.environ.get('SLURM_NTASKS', '1')) > 1 and 'SLURM_PROCID' in os.environ:
    return 'SLURM'
  if len([h for h in os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return 'Cloud TPU'
  if int(os.environ.get('OMPI_COMM_WORLD_SIZE', '1')) > 1:
    return 'Open MPI'
  return ''


def initialize(mode: str = 'auto', coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> bool:
  """Calls jax.distributed.initialize when asked or when a multi-process cluster is detected.

  Args:
    mode: 'auto' (explicit arguments or a detected SLURM / Cloud TPU / Open MPI job),
      'on' (always; arguments or auto-detection) or 'off'.
    coordinator_address: 'host:port' of process 0 ('' = let JAX detect it).
    num_processes, process_id: explicit job layout (0 / -1 = let JAX detect it).
  Returns:
    True if this is a multi-process run.
  """
  explicit = bool(coordinator_address) or num_processes > 1
  if mode == 'off' or (mode == 'auto' and not explicit and not _cluster_detected()):
    return False
  if jax.config.jax_platforms in ('cpu',) or os.environ.get('JAX_PLATFORMS', '') == 'cpu':
    # CPU devices of different processes talk through gloo (TCP); the default has no
    # cross-process collectives.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = {}
  if coordinator_address:
    kwargs['coordinator_address'] = coordinator_address
  if num_processes:
    kwargs['num_processes'] = num_processes
  if process_id >= 0:
    kwargs['process_id'] = process_id
  jax.distributed.initialize(**kwargs)
  return jax.process_count() > 1
