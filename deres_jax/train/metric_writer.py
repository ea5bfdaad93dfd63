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

  def drop_after(self, step: int):
    """Drops the lines of steps after `step`: those a killed run wrote past its last checkpoint.

    The rerun resumes from that checkpoint and writes them again; the file is replaced
    atomically, so a kill here leaves either the old or the new file.
    """
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = f.readlines()
    # A kill while appending can leave a last line cut short: drop it with the later steps.
    keep = [l for l in lines
            if l.endswith('\n') and l.strip() and json.loads(l).get('step', 0) <= step]
    if len(keep) == len(lines):
      return
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(keep)
    os.replace(tmp, self.path)


def read(path: str) -> list:
  """Reads a metrics.jsonl file into a list of dicts."""
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
