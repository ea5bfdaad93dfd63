"""Preemption: SIGTERM/SIGINT become a checkpoint and a clean exit with code 143.

The handler only sets a flag; the loop (train/trainer.py) reads it between steps, saves a
checkpoint at that step, and raises `Preempted` (a SystemExit with code 143 = 128 + SIGTERM,
"not finished": schedulers such as SLURM and Kubernetes requeue such jobs). In a multi-process
job the flags are agreed across processes at log steps, so every process saves the same step.
"""
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(SystemExit):
  """Raised after a preemption checkpoint; exits with 143 (128 + SIGTERM): not finished."""

  def __init__(self, msg):
    super().__init__(143)
    self.message = msg


class Listener:
  """Turns SIGTERM/SIGINT into a flag checked between steps (save, then exit cleanly)."""

  def __init__(self):
    self.signal = None
    self._old = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._old[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: leave signals alone
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.signal is not None:  # a second signal: give up at once
      raise KeyboardInterrupt
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, old in self._old.items():
      signal.signal(sig, old)


def agreed_signal(preempt, signalled, log_now):
  """The preemption signal all processes agreed on (None: keep training).

  One process alone must not enter the checkpoint's barriers while the others go on to the
  next step's all-reduce: in a multi-process job the flags are gathered at every log step, so
  all processes save at the same step and exit together.
  """
  if jax.process_count() == 1:
    return preempt.signal
  if log_now and not signalled:
    with jax.transfer_guard('allow'):  # an explicit, tiny host<->device exchange
      flags = multihost_utils.process_allgather(np.int32(preempt.signal is not None))
    if np.any(flags):
      return preempt.signal or 'SIGTERM (received by another process)'
  return signalled


def exit_preempted(signalled, step, ckpt, pbar, is_main):
  if pbar is not None:
    pbar.close()
  ckpt.wait()
  msg = (f'Received {signalled} at step {step}: checkpoint saved in {ckpt.directory}. '
         'Run the same command again to resume.')
  if is_main:
    print(msg, flush=True)
  ckpt.close()
  raise Preempted(msg)
