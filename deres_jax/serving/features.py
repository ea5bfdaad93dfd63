"""Raw input rows -> model features, with the vocabularies saved at preparation time.

The one encoder behind `launch/predict.py`, the exported model and the HTTP server. A new
row takes the same code path as a training row (`rows.parse_chunk`: the same number parsing,
bucketing, hour and string keys, the same bad-row checks), then the saved vocabularies turn
keys into ids; a key not in a vocabulary (unseen, or rarer than min_count in training) gets
the out-of-vocabulary id 0 and is counted.

The label is never needed: every line gets a stand-in label column in front (`LABEL`), and a
label column the input has anyway is read like any other unused column.
JSON rows (the server) are written as lines separated by the ASCII unit separator, which no
value may contain, so that they too take that path.

Sequence fields (a behaviour history, data/sequences.py) take the preparation's path too: the
list text (`12|45|78`, or a JSON list joined by the separator, `sequence_text`) is split and
capped to the most recent `seq_max_len` elements by `rows.parse_chunk`, and encoded by
`sequences.encode_lists`, the function that writes the prepared 'seq' column: int32
[n, F_seq, L], left-padded with -1. An element no vocabulary holds gets id 0 and is counted
per field, as a scalar value; an empty list (or null) is all padding.
"""
import dataclasses
import math
import re

import numpy as np

from deres_jax.data import delimited
from deres_jax.data import sequences
from deres_jax.data.bad_input import BadInput, BadInputError
from deres_jax.data.rows import MISSING_INT, RowSpec, parse_chunk
from deres_jax.data.vocab import encode

LABEL = '__label__'       # the stand-in label column put in front of every line
UNIT_SEP = '\x1f'         # separator of the text JSON rows are written as
_FORBIDDEN = (UNIT_SEP, '\n', '\r', '\x00')
_NONEMPTY_LINE = re.compile(rb'^(?=[^\n])', re.MULTILINE)
_FIELD_COUNT = re.compile(r'(\d+) fields, expected (\d+)(?: to (\d+))?')


class SchemaError(ValueError):
  """The input does not have the columns the model was trained on (one sentence)."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What a raw input row looks like and how its categorical values become ids."""
  row_spec: RowSpec         # the training data's row format (label, columns, separator, ...)
  vocab: tuple              # per categorical field (row_spec.cat_names order): int64 keys, id = 1 + position
  seq_vocab: tuple = ()     # per sequence field (row_spec.sequence order): its keys (a shared field: the scalar's)

  @property
  def columns(self) -> tuple:
    """The columns of an input line without a label."""
    return tuple(c for c in self.row_spec.columns if c != self.row_spec.label)

  @property
  def features(self) -> tuple:
    """The columns the model reads (a JSON row must have each of them)."""
    s = self.row_spec
    used = set(s.dense) | set(s.categorical) | set(s.bucketed) | set(s.sequence) | {s.hour} - {''}
    return tuple(c for c in s.columns if c in used)

  @property
  def num_dense(self) -> int:
    return len(self.row_spec.dense_names)

  @property
  def seq_len(self) -> int:
    """L, the ids kept per sequence field (0 without sequence fields)."""
    return self.row_spec.seq_max_len if self.row_spec.sequence else 0

  @property
  def oov_names(self) -> tuple:
    """The fields `Encoded.oov` counts: the categorical fields, then the sequence fields."""
    return tuple(self.row_spec.cat_names) + tuple(self.row_spec.sequence)

  def to_json(self) -> dict:
    return dataclasses.asdict(self.row_spec)

  @classmethod
  def from_json(cls, row_spec: dict, vocab, seq_vocab=()) -> 'InputSpec':
    spec = RowSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in row_spec.items()})
    return cls(spec, tuple(vocab), tuple(seq_vocab))


@dataclasses.dataclass
class Encoded:
  """The good rows of one piece of input, ready for the model."""
  line: np.ndarray          # int64 [n] 1-based line (or row) numbers of the rows kept
  cat: np.ndarray           # int32 [n, F_cat] ids
  dense: np.ndarray         # float32 [n, F_dense] (NaN = missing)
  oov: np.ndarray           # int64 [F_cat + F_seq] present values (list elements) that got the OOV id 0
  lines: int                # data lines seen (the header excluded)
  seq: np.ndarray = None    # int32 [n, F_seq, L] ids, left-padded with -1 (None without sequence fields)


def scoring_spec(spec: InputSpec, has_label: bool, sep: str | None = None, header: bool | None = None) -> RowSpec:
  """The RowSpec of input lines with the stand-in label in front (see module docstring)."""
  s = dataclasses.replace(spec.row_spec, time='')  # a time-split column is not needed to score
  columns = s.columns if has_label else spec.columns
  min_fields = s.min_fields + (1 if has_label else 0) if s.min_fields else 0
  return dataclasses.replace(s, columns=(LABEL, *columns), label=LABEL, min_fields=min_fields,
                             sep=s.sep if sep is None else sep,
                             header=s.header if header is None else header)


def encode_text(spec: InputSpec, rspec: RowSpec, data: bytes, first_line: int, path: str,
                bad: BadInput) -> Encoded:
  """Encodes lines of text (ending with a newline) in the format `rspec` (`scoring_spec`)."""
  if rspec.scenario:
    raise SchemaError('multi-scenario models are not served (the scenario column has no vocabulary here)')
  # The stand-in label in front of every non-empty line (a blank line stays a blank line).
  data = _NONEMPTY_LINE.sub(('0' + rspec.sep).encode().replace(b'\\', b'\\\\'), data)
  chunk = delimited.Chunk(data, first_line, rspec.sep)
  here = BadInput(bad.strict)
  try:
    p = parse_chunk(rspec, chunk, path, here)
  except BadInputError as e:
    raise BadInputError(_file_counts(str(e))) from None
  here.reasons = {k: _file_counts(v) for k, v in here.reasons.items()}
  bad.merge(here)
  cat = np.empty(p.keys.shape, np.int32)
  oov = np.zeros(p.keys.shape[1], np.int64)
  for j, vocab_keys in enumerate(spec.vocab):
    cat[:, j] = encode(p.keys[:, j], vocab_keys)
    # Missing values (key 0 for strings, MISSING_INT for numbers) are not "unseen".
    oov[j] = int(np.sum((cat[:, j] == 0) & (p.keys[:, j] != 0) & (p.keys[:, j] != MISSING_INT)))
  seq = None
  if rspec.sequence:  # the preparation's own encoding of the kept (most recent) elements
    seq = sequences.encode_lists(p.seq_keys, p.seq_kept, spec.seq_vocab)
    kept = ~sequences.pad_mask(p.seq_kept, rspec.seq_max_len)
    oov = np.concatenate([oov, np.sum((seq == 0) & kept, axis=(0, 2)).astype(np.int64)])
  header = 1 if rspec.header and first_line == 1 else 0
  return Encoded(line=p.line, cat=cat, dense=p.dense.astype(np.float32), oov=oov,
                 lines=chunk.num_lines - header, seq=seq)


def _file_counts(reason: str) -> str:
  """A field-count reason in the file's own terms (without the stand-in label column)."""
  return _FIELD_COUNT.sub(lambda m: f'{int(m[1]) - 1} fields, expected {int(m[2]) - 1}' +
                          (f' to {int(m[3]) - 1}' if m[3] else ''), reason)


def _check_text(text: str, name: str, row: int) -> str:
  if any(c in text for c in _FORBIDDEN):
    raise SchemaError(f'row {row} field {name!r}: the value holds a control character '
                      '(newline, NUL or \\x1f)')
  return text


def sequence_text(value, name: str, row: int, sep: str) -> str:
  """The text of a sequence field given in a JSON row, as a CSV holds it (`12|45|78`).

  A string is the list as the CSV writes it (its elements separated by `sep`), a JSON list
  holds the elements (integers or non-empty strings without `sep`, oldest first), a single
  integer is a list of one; null and [] are the empty list. Anything else raises SchemaError.
  The text is then split, capped and checked by the preparation's parser (`rows.parse_chunk`).
  """
  if value is None:
    return ''
  if isinstance(value, (list, tuple)):
    parts = []
    for k, x in enumerate(value):
      if isinstance(x, bool) or not isinstance(x, (int, str)):
        raise SchemaError(f'row {row} field {name!r}: element {k} is {type(x).__name__} {x!r}, but the '
                          'elements of a sequence field are ids (integers or strings)')
      x = str(x)
      if not x or sep in x:
        raise SchemaError(f'row {row} field {name!r}: element {k} {x!r} is empty or holds the separator {sep!r}')
      parts.append(x)
    return _check_text(sep.join(parts), name, row)
  if isinstance(value, bool) or not isinstance(value, (int, str)):
    raise SchemaError(f'row {row} field {name!r}: a sequence field is a list of ids, a string of ids '
                      f'separated by {sep!r}, or null; got {type(value).__name__}')
  return _check_text(str(value), name, row)


def _text(value, name: str, row: int) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''  # missing
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    raise SchemaError(f'row {row} field {name!r}: expected a number, a string or null, got '
                      f'{type(value).__name__}')
  return _check_text(repr(value) if isinstance(value, float) else str(value), name, row)


def encode_rows(spec: InputSpec, rows) -> Encoded:
  """Encodes JSON-like rows ({column: value}); any problem raises SchemaError naming the row.

  Every feature column is required (null = missing); other columns of the input format (the
  label, an id) may be given or left out; unknown keys are an error (a schema mismatch). A
  sequence field is a JSON list of ids or the CSV's text of one (`sequence_text`).
  """
  if not isinstance(rows, list):
    raise SchemaError(f'expected a list of rows (JSON objects), got {type(rows).__name__}')
  columns, required = spec.columns, spec.features
  known = set(spec.row_spec.columns)
  seq_cols, seq_sep = set(spec.row_spec.sequence), spec.row_spec.seq_sep
  lines = []
  for i, row in enumerate(rows):
    if not isinstance(row, dict):
      raise SchemaError(f'row {i} is a {type(row).__name__}, not an object of column: value')
    missing = [c for c in required if c not in row]
    if missing:
      raise SchemaError(f'row {i} lacks the field{"s" if len(missing) > 1 else ""} '
                        f'{", ".join(map(repr, missing[:5]))}{" ..." if len(missing) > 5 else ""}; '
                        f'the model reads {list(required)}')
    unknown = [k for k in row if k not in known]
    if unknown:
      raise SchemaError(f'row {i} has unknown field{"s" if len(unknown) > 1 else ""} '
                        f'{", ".join(map(repr, unknown[:5]))}; the model reads {list(required)}')
    lines.append(UNIT_SEP.join(sequence_text(row.get(c), c, i, seq_sep) if c in seq_cols else _text(row.get(c), c, i)
                               for c in columns))
  rspec = scoring_spec(spec, has_label=False, sep=UNIT_SEP, header=False)
  rspec = dataclasses.replace(rspec, min_fields=0)
  data = ('\n'.join(lines) + '\n').encode() if lines else b''
  if not lines:
    seq = np.zeros((0, len(spec.seq_vocab), spec.seq_len), np.int32) if spec.row_spec.sequence else None
    return Encoded(np.zeros(0, np.int64), np.zeros((0, len(spec.vocab)), np.int32),
                   np.zeros((0, spec.num_dense), np.float32), np.zeros(len(spec.oov_names), np.int64), 0, seq)
  try:
    return encode_text(spec, rspec, data, 0, 'row', BadInput(strict=True))
  except BadInputError as e:  # 'row:<i>: reason (--strict ...)' -> one sentence
    raise SchemaError(str(e).split(' (--strict')[0].replace('row:', 'row ', 1)) from None


def check_header(spec: InputSpec, header_columns: tuple) -> bool:
  """Whether a file with this header has the label column; raises SchemaError on a mismatch."""
  for has_label, want in ((True, spec.row_spec.columns), (False, spec.columns)):
    if tuple(header_columns) == tuple(want):
      return has_label
  have = set(header_columns)
  lacks = [c for c in spec.columns if c not in have]
  extra = [c for c in header_columns if c not in set(spec.row_spec.columns)]
  what = '; '.join(x for x in (f'it lacks {lacks}' if lacks else '', f'it has unknown {extra}' if extra else '')
                   if x) or 'the same columns in another order'
  raise SchemaError(f'the input header does not match the model\'s input columns ({what}); expected '
                    f'{list(spec.columns)} (the label {spec.row_spec.label!r} in its place is optional)')


def synthetic_spec(num_dense: int, vocab_sizes) -> InputSpec:
  """The raw format of the synthetic data: a CSV of label, I1.., C1.. with ids as integers.

  The synthetic ids are already ids, so each vocabulary is the identity: the key of the text
  'i' is at position i - 1 (id i); an empty field is missing (id 0), and ids outside [1, V)
  also get id 0 (counted as unseen).
  """
  dense = tuple(f'I{k + 1}' for k in range(num_dense))
  cat = tuple(f'C{f + 1}' for f in range(len(vocab_sizes)))
  row_spec = RowSpec(name='synthetic', columns=('label', *dense, *cat), label='label', dense=dense,
                     categorical=cat, sep=',', header=True)
  vocab = []
  for v in vocab_sizes:
    text = np.char.mod('%d', np.arange(1, v)).astype('S8')  # ids < 10^8: short-string keys
    vocab.append(np.ascontiguousarray(text).view('<i8').astype(np.int64))
  return InputSpec(row_spec, tuple(vocab))


def write_synthetic_csv(split: dict, schema, path: str, rows: int | None = None, label: bool = True):
  """Writes (the first `rows` of) a synthetic split in its raw CSV format (`synthetic_spec`)."""
  n = len(split['label']) if rows is None else min(rows, len(split['label']))
  dense = split['dense'][:n]
  head = (['label'] if label else []) + list(schema.dense_names) + list(schema.cat_names)
  out = [','.join(head)]
  for i in range(n):
    d = ['' if np.isnan(x) else f'{x:.9g}' for x in dense[i]]  # exact for float32
    out.append(','.join(([f'{int(split["label"][i])}'] if label else []) + d +
                        [str(int(c)) if c else '' for c in split['cat'][i]]))  # id 0: missing
  with open(path, 'w') as f:
    f.write('\n'.join(out) + '\n')
