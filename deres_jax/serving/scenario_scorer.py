"""`ScenarioScorer`: rows with a scenario column -> probabilities, for multi-scenario models.

Rows are JSON-like objects ({column: value}) with every dense and categorical field and the
scenario. How a categorical value is read depends on the export (`info['vocabulary']`):

  'raw'  (a dataset read from CSV/Parquet, `multiscenario/samples.py`): the raw value as the
         training file held it, a string or a number (its text: 17 -> '17'), looked up in the
         saved vocabulary like a CTR model's (`data/delimited.py key_of_string`, `data/vocab.py
         encode`); an unseen value gets the OOV id 0 and is counted per field; null is the
         missing value: the id of the empty field if training rows had one (else 0), not counted.
         A dense value is a number or its text, parsed as training parsed it (empty or
         unparsable = missing). The scenario may also be given under the file's own scenario
         column (`raw_format['scenario_column']`, e.g. 'domain'): there it is a raw value (the
         scenario's name as text). Other columns of the raw files (labels, group) are allowed.
  'ids'  (the synthetic data, and exports made before vocabularies were saved): the encoded
         schema: every categorical field as its id (the synthetic generator's ids are its raw
         values; an id outside [1, V) gets the OOV id 0 and is counted; null is missing) and
         every dense field a number or null.

Sequence fields (behaviour histories, `info['sequences']`, only with 'raw'): a JSON list of the
raw element values (ids or strings, oldest first), the training file's text of the list
(`12|45|78`), or null / [] for an empty history; checked by `features.sequence_text`, split, capped
to the most recent `seq_len` elements and encoded by the functions that encoded the training rows
(`data/sequences.py split_texts`, `encode_lists`): 'seq' int32 [n, F_seq, L], left-padded with
-1. An element no vocabulary holds gets the OOV id 0 and is counted per field, after the
categorical fields; a list with an empty element raises SchemaError naming the row.

`scenario` is the name of the scenario as the training data named it (`scenario_names`, e.g.
's0' or 'book'; a row may also give the integer id). A scenario the model was not trained on
gets the id S, which every multi-scenario model treats as unseen: no scenario-specific
parameters, the shared path only (`multiscenario/models/inputs.py scenario_ids`); such rows
are counted (`unseen_scenarios`).

The same class wraps the exported model (`serving.load`) and the one restored in process
(`multiscenario_export.in_process`); only the logits function differs. Nothing of the
training code is imported here.
"""
import math
import numbers

import numpy as np

from deres_jax.data import sequences
from deres_jax.data.delimited import key_of_string
from deres_jax.data.vocab import encode as vocab_encode
from deres_jax.serving.features import SchemaError, sequence_text


class ScenarioScorer:
  """Scores multi-scenario rows; `info` holds the schema, scenario names, step, metrics."""

  def __init__(self, logits_fn, info: dict, batch_size: int = 1024, vocab=None, seq_vocab=None):
    # {'cat': int32 [b, F], 'dense': float32 [b, D], 'scenario': int32 [b], 'seq': int32 [b, F_seq, L]} -> [b]
    self._logits_fn = logits_fn
    self.info, self.batch_size = dict(info), int(batch_size)
    self.dense_names, self.cat_names = tuple(info['dense_names']), tuple(info['cat_names'])
    self.vocab_sizes = np.asarray(info['vocab_sizes'], np.int64)
    self.scenario_names = tuple(info['scenario_names'])
    self._scenario_id = {n: i for i, n in enumerate(self.scenario_names)}
    # Raw values: per categorical field the int64 keys in id order (vocab.npz), as a CTR export.
    self.vocab = None if vocab is None else tuple(np.asarray(v, np.int64) for v in vocab)
    if self.vocab is not None and len(self.vocab) != len(self.cat_names):
      raise ValueError(f'{len(self.vocab)} vocabularies for {len(self.cat_names)} categorical fields')
    # Sequence fields: per field its keys in id order (a shared field: the categorical field's).
    self.seq_names = tuple(s['name'] for s in info.get('sequences', ()))
    self.seq_len = int(info.get('seq_len', 0)) if self.seq_names else 0
    self.seq_sep = info['sequences'][0]['sep'] if self.seq_names else '|'
    if self.seq_names and (self.vocab is None or seq_vocab is None or len(seq_vocab) != len(self.seq_names)):
      raise ValueError(f'the sequence fields {list(self.seq_names)} need their raw-value vocabularies '
                       '(one key array per field, vocab.npz); this model has none for them')
    self.seq_vocab = tuple(np.asarray(v, np.int64) for v in seq_vocab) if self.seq_names else ()
    raw = (self.info.get('raw_format') or {}) if self.vocab is not None else {}
    self.scenario_column = raw.get('scenario_column') or 'scenario'
    self._other = set(raw.get('labels', ())) | ({raw['group']} if raw.get('group') else set())

  @property
  def raw(self) -> bool:
    """Whether rows hold raw values (the export saved vocabularies) rather than ids."""
    return self.vocab is not None

  def encode(self, rows) -> tuple:
    """(batch of numpy columns, OOV values per field [F_cat + F_seq], unseen-scenario rows) of JSON-like rows."""
    if not isinstance(rows, list):
      raise SchemaError(f'expected a list of rows (JSON objects), got {type(rows).__name__}')
    fields = (*self.dense_names, *self.cat_names, *self.seq_names)
    known = set(fields) | {'scenario', self.scenario_column} | self._other
    n, S = len(rows), len(self.scenario_names)
    cat = np.zeros((n, len(self.cat_names)), np.int64)
    texts = [[''] * n for _ in self.cat_names]
    lists = [[''] * n for _ in self.seq_names]
    dense = np.full((n, len(self.dense_names)), np.nan, np.float32)
    scenario = np.full(n, S, np.int32)
    for i, row in enumerate(rows):
      if not isinstance(row, dict):
        raise SchemaError(f'row {i} is a {type(row).__name__}, not an object of column: value')
      missing = [c for c in fields if c not in row]
      if 'scenario' not in row and self.scenario_column not in row:
        missing.append('scenario')
      if missing:
        raise SchemaError(f'row {i} lacks the fields {missing[:5]}; the model reads '
                          f'{[*fields, "scenario"]}')
      unknown = [k for k in row if k not in known]
      if unknown:
        raise SchemaError(f'row {i} has unknown fields {unknown[:5]}')
      if self.raw:
        for j, c in enumerate(self.dense_names):
          dense[i, j] = _raw_number(_raw_text(row[c], c, i))
        for j, c in enumerate(self.cat_names):
          texts[j][i] = _raw_text(row[c], c, i)
      else:
        for j, c in enumerate(self.dense_names):
          dense[i, j] = _number(row[c], c, i)
        for j, c in enumerate(self.cat_names):
          v = row[c]
          if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            raise SchemaError(f'row {i} field {c!r}: expected an integer id or null, got {v!r}')
          cat[i, j] = -1 if v is None else (v if abs(v) < 2 ** 62 else -2)   # -1 missing; -2 any id beyond int64
      for j, c in enumerate(self.seq_names):
        lists[j][i] = sequence_text(row[c], c, i, self.seq_sep)
      scenario[i] = self._scenario(row, i)
    if self.raw:
      cat, oov = self._lookup(texts, n)
    else:
      oov = ((cat != -1) & ((cat < 1) | (cat >= self.vocab_sizes))).sum(0)   # null = missing, not unseen
      cat = np.where((cat >= 1) & (cat < self.vocab_sizes), cat, 0).astype(np.int32)
    batch = {'cat': cat, 'dense': dense, 'scenario': scenario}
    if self.seq_names:
      batch['seq'], seq_oov = self._lists(lists, n)
      oov = np.concatenate([oov, seq_oov])
    return batch, oov, int((scenario == S).sum())

  def _lists(self, lists, n: int) -> tuple:
    """(int32 'seq' [n, F_seq, L], OOV elements per sequence field [F_seq]) of the lists' texts."""
    keys = np.zeros((n, len(self.seq_names), self.seq_len), np.int64)
    kept = np.zeros((n, len(self.seq_names)), np.int32)
    for j, c in enumerate(self.seq_names):   # the training rows' split, cap and keys
      keys[:, j], kept[:, j], _, empty = sequences.split_texts(lists[j], self.seq_sep, self.seq_len)
      if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise SchemaError(f'row {i} field {c!r}: the list {lists[j][i][:60]!r} has an empty element '
                          f'(separator {self.seq_sep!r} doubled, leading or trailing)')
    seq = sequences.encode_lists(keys, kept, self.seq_vocab)
    real = ~sequences.pad_mask(kept, self.seq_len)
    return seq, np.sum((seq == 0) & real, axis=(0, 2)).astype(np.int64)

  def _scenario(self, row: dict, i: int) -> int:
    """The scenario id of a row (S: not seen in training)."""
    S = len(self.scenario_names)
    if 'scenario' in row or self.scenario_column == 'scenario':
      s = row['scenario']
      if isinstance(s, bool) or not isinstance(s, (str, numbers.Integral)):
        raise SchemaError(f'row {i} field \'scenario\': expected a scenario name or id, got {s!r}')
    else:   # the raw file's own scenario column: a raw value, its text is the name
      s = _raw_text(row[self.scenario_column], self.scenario_column, i)
    sid = self._scenario_id.get(s, -1) if isinstance(s, str) else (int(s) if 0 <= s < S else -1)
    return S if sid < 0 else sid

  def _lookup(self, texts, n: int) -> tuple:
    """(int32 ids [n, F], OOV counts [F]) of raw categorical texts ('' = missing, not counted)."""
    cat = np.zeros((n, len(self.cat_names)), np.int32)
    oov = np.zeros(len(self.cat_names), np.int64)
    if not n:
      return cat, oov
    for j, column in enumerate(texts):
      uniq, inverse = np.unique(np.asarray(column, object).astype(str), return_inverse=True)
      inverse = inverse.reshape(-1)
      keys = np.asarray([key_of_string(t.encode('utf-8')) for t in uniq], np.int64)
      ids = vocab_encode(keys, self.vocab[j])   # the CTR lookup: 1 + position of the key, 0 = OOV
      cat[:, j] = ids[inverse]
      oov[j] = int(((ids == 0) & (uniq != ''))[inverse].sum())
    return cat, oov

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


def _raw_text(v, name, row) -> str:
  """The text a raw value had in the training file (the loader reads str(value); null = '')."""
  if v is None:
    return ''
  if isinstance(v, (dict, list, tuple, set)):
    raise SchemaError(f'row {row} field {name!r}: expected a string, a number or null, got {type(v).__name__}')
  return v if isinstance(v, str) else str(v)   # a number, or a Parquet date/time/decimal as the loader reads it


def _raw_number(text: str) -> float:
  """A dense value as the loader parses it (`samples._float`): float(text), NaN if it does not parse."""
  try:
    return float(text)
  except ValueError:
    return np.nan
