"""`ScenarioScorer`: rows with a scenario column -> probabilities, for multi-scenario models.

Rows are JSON-like objects in the model's encoded schema: every dense field (a number or null
= missing), every categorical field as its id (the synthetic generator's ids are its raw
values; an id outside [1, V) or null gets the OOV id 0 and is counted), and `scenario`, the
name of the scenario as the training data named it (`scenario_names`, e.g. 's0'; a row may
also give the integer id). A scenario the model was not trained on gets the id S, which every
multi-scenario model treats as unseen: no scenario-specific parameters, the shared path only
(`multiscenario/models/inputs.py scenario_ids`); such rows are counted (`unseen_scenarios`).

The same class wraps the exported model (`serving.load`) and the one restored in process
(`multiscenario_export.in_process`); only the logits function differs. Nothing of the
training code is imported here.
"""
import math
import numbers

import numpy as np

from deres_jax.serving.features import SchemaError


class ScenarioScorer:
  """Scores multi-scenario rows; `info` holds the schema, scenario names, step, metrics."""

  def __init__(self, logits_fn, info: dict, batch_size: int = 1024):
    self._logits_fn = logits_fn   # {'cat': int32 [b, F], 'dense': float32 [b, D], 'scenario': int32 [b]} -> [b]
    self.info, self.batch_size = dict(info), int(batch_size)
    self.dense_names, self.cat_names = tuple(info['dense_names']), tuple(info['cat_names'])
    self.vocab_sizes = np.asarray(info['vocab_sizes'], np.int64)
    self.scenario_names = tuple(info['scenario_names'])
    self._scenario_id = {n: i for i, n in enumerate(self.scenario_names)}

  def encode(self, rows) -> tuple:
    """(batch of numpy columns, OOV ids per field [F], unseen-scenario rows) of JSON-like rows."""
    if not isinstance(rows, list):
      raise SchemaError(f'expected a list of rows (JSON objects), got {type(rows).__name__}')
    known = set(self.dense_names) | set(self.cat_names) | {'scenario'}
    n, S = len(rows), len(self.scenario_names)
    cat = np.zeros((n, len(self.cat_names)), np.int64)
    dense = np.full((n, len(self.dense_names)), np.nan, np.float32)
    scenario = np.full(n, S, np.int32)
    for i, row in enumerate(rows):
      if not isinstance(row, dict):
        raise SchemaError(f'row {i} is a {type(row).__name__}, not an object of column: value')
      missing = [c for c in (*self.dense_names, *self.cat_names, 'scenario') if c not in row]
      if missing:
        raise SchemaError(f'row {i} lacks the fields {missing[:5]}; the model reads '
                          f'{[*self.dense_names, *self.cat_names, "scenario"]}')
      unknown = [k for k in row if k not in known]
      if unknown:
        raise SchemaError(f'row {i} has unknown fields {unknown[:5]}')
      for j, c in enumerate(self.dense_names):
        dense[i, j] = _number(row[c], c, i)
      for j, c in enumerate(self.cat_names):
        v = row[c]
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
          raise SchemaError(f'row {i} field {c!r}: expected an integer id or null, got {v!r}')
        cat[i, j] = -1 if v is None else (v if abs(v) < 2 ** 62 else -2)   # -1 missing; -2 any id beyond int64
      s = row['scenario']
      if isinstance(s, bool) or not isinstance(s, (str, numbers.Integral)):
        raise SchemaError(f'row {i} field \'scenario\': expected a scenario name or id, got {s!r}')
      sid = self._scenario_id.get(s, -1) if isinstance(s, str) else (int(s) if 0 <= s < S else -1)
      scenario[i] = S if sid < 0 else sid
    oov = ((cat != -1) & ((cat < 1) | (cat >= self.vocab_sizes))).sum(0)   # null = missing, not unseen
    cat = np.where((cat >= 1) & (cat < self.vocab_sizes), cat, 0).astype(np.int32)
    return {'cat': cat, 'dense': dense, 'scenario': scenario}, oov, int((scenario == S).sum())

  def logits(self, batch: dict) -> np.ndarray:
    """float32 logits [n] of encoded columns, in power-of-two padded batches (8 .. batch_size)."""
    n = len(batch['scenario'])
    out = np.empty(n, np.float32)
    for start in range(0, n, self.batch_size):
      part = {k: v[start:start + self.batch_size] for k, v in batch.items()}
      m = len(part['scenario'])
      size = min(self.batch_size, max(8, 1 << (m - 1).bit_length()))
      padded = {k: np.concatenate([v, np.zeros((size - m,) + v.shape[1:], v.dtype)]) for k, v in part.items()}
      out[start:start + m] = np.asarray(self._logits_fn(padded), np.float32)[:m]
    return out

  def score_rows(self, rows) -> tuple:
    """(probabilities float64 [n], unseen-scenario rows, OOV ids per field) of JSON-like rows."""
    batch, oov, unseen = self.encode(rows)
    if not rows:
      return np.zeros(0), 0, oov
    return 1.0 / (1.0 + np.exp(-self.logits(batch).astype(np.float64))), unseen, oov


def _number(v, name, row):
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return np.nan
  if isinstance(v, bool) or not isinstance(v, numbers.Real):
    raise SchemaError(f'row {row} field {name!r}: expected a number or null, got {v!r}')
  return float(v)
