"""Metrics as JSON lines in WORKDIR/metrics.jsonl (process 0 only), one line per record."""
import json
import math
import os

import jax


def _clean(v):
  v = float(v) if hasattr(v, '__float__') and not isinstance(v, (int, str)) else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/Inf; keep them visible as strings
  return v


class MetricWriter:
  """Appends {'step': s, **metrics} lines; a resumed run keeps appending to the same file."""

  def __init__(self, workdir: str, filename: str = 'metrics.jsonl'):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, filename)

  def write(self, step: int, metrics: dict):
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _clean(v) for k, v in metrics.items()}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
      f.flush()


def read(path: str) -> list:
  """Reads a metrics.jsonl file into a list of dicts."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
