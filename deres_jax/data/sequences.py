"""Sequence fields: one delimited column holding a list of ids (`12|45|78`), oldest first.

A behaviour history (the items a user clicked before this row) is one text field whose
elements are separated by `RowSpec.seq_sep` (a character other than the field separator).
Each element is a categorical value, keyed exactly as `delimited.string_keys` keys a scalar
categorical value, so a history column can share the vocabulary of a scalar field
(`hist_item_id` with `item_id`): the same text gets the same id in both.

Stored layout (schema.py, 'seq' [N, F_seq, L]): the most recent `seq_max_len` = L elements,
oldest first and LEFT-padded, so the most recent item is always at position L-1 (what
target attention and OneTrans's causal S-tokens want: the pyramid drops the oldest tokens
first). An empty field is an empty list (all padding). Bad lists (an empty element as in
`12||78` or a trailing separator, or more than `seq_reject_len` elements) are bad rows.
"""
import numpy as np

from deres_jax.data import delimited
from deres_jax.data.vocab import encode


def split_lists(chunk: delimited.Chunk, start, end, sep: str, max_len: int):
  """The last `max_len` elements of list fields, as int64 keys.

  Args:
    chunk: the chunk holding the fields.
    start, end: int [n] byte range of one list field per row.
    sep: the element separator (one character).
    max_len: L, the number of (most recent) elements kept.
  Returns:
    (keys int64 [n, L] left-padded with 0, kept int32 [n] elements kept (<= L),
     length int64 [n] elements in the field, empty_element bool [n] an element is empty).
  """
  sep_pos = np.flatnonzero(chunk.buf == ord(sep))
  lo, hi = np.searchsorted(sep_pos, start), np.searchsorted(sep_pos, end)
  length = np.where(end > start, hi - lo + 1, 0)  # an empty field is an empty list
  # Element k of a row runs from (k == 0 ? start : sep k-1 + 1) to (k == last ? end : sep k).
  j = np.arange(max_len)
  k = length[:, None] - max_len + j[None, :]   # position j holds element k (left padding)
  valid = k >= 0
  k = np.maximum(k, 0)
  at = lo[:, None] + k                          # index into sep_pos of the separator after element k
  last = k == (length[:, None] - 1)
  prev = np.clip(at - 1, 0, max(len(sep_pos) - 1, 0))
  nxt = np.clip(at, 0, max(len(sep_pos) - 1, 0))
  e_start = np.where(k == 0, start[:, None], sep_pos[prev] + 1 if len(sep_pos) else 0)
  e_end = np.where(last, end[:, None], sep_pos[nxt] if len(sep_pos) else 0)
  e_start, e_end = np.where(valid, e_start, 0), np.where(valid, e_end, 0)
  keys = np.where(valid, delimited.string_keys(chunk, e_start, e_end), 0)
  # Every element must be non-empty, also those beyond the cap: a bad list is a bad row.
  empty = np.zeros(len(start), bool)
  if len(sep_pos):
    has = length > 1
    first_empty = has & (sep_pos[np.minimum(lo, len(sep_pos) - 1)] == start)
    last_empty = has & (sep_pos[np.maximum(hi - 1, 0)] == end - 1)
    doubled = np.flatnonzero(np.diff(sep_pos) == 1)  # two separators in a row: '12||78'
    inside = np.zeros(len(start), bool)
    if len(doubled):
      a, b = np.searchsorted(doubled, lo), np.searchsorted(doubled, hi - 1)
      inside = b > a
    empty = first_empty | last_empty | inside
  return keys, np.minimum(length, max_len).astype(np.int32), length, empty


def pad_mask(kept, max_len: int):
  """bool [..., L]: True at the padded (left) positions of lists with `kept` elements."""
  return np.arange(max_len) < (max_len - np.asarray(kept)[..., None])


def elements(keys, kept) -> list:
  """Per list field, the keys of its kept (not padded) elements: keys [n, F, L], kept [n, F]."""
  real = ~pad_mask(kept, keys.shape[2])
  return [keys[:, f][real[:, f]] for f in range(keys.shape[1])]


def encode_lists(keys, kept, vocabs):
  """int64 keys [n, F, L] -> int32 ids (vocabulary.encode per field), padding -1."""
  if not len(keys):
    return keys.astype(np.int32)
  ids = np.stack([encode(keys[:, f].reshape(-1), v).reshape(len(keys), -1)
                  for f, v in enumerate(vocabs)], axis=1)
  return np.where(pad_mask(kept, keys.shape[2]), -1, ids).astype(np.int32)


def split_texts(texts, sep: str, max_len: int):
  """`split_lists` of list fields given as Python strings, one per row (`12|45|78`).

  The texts are laid out as the lines of one chunk and split by `split_lists` itself, so a
  list held as a Python string (the multi-scenario loader's CSV cells, a JSON row's value)
  gets exactly the keys, cap and bad-list flags of the same text in a prepared file.
  Returns (keys int64 [n, L], kept int32 [n], length int64 [n], empty_element bool [n]).
  """
  parts = [t.encode('utf-8') for t in texts]
  if not parts:
    return (np.zeros((0, max_len), np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64),
            np.zeros(0, bool))
  size = np.fromiter((len(p) for p in parts), np.int64, len(parts))
  end = np.cumsum(size + 1) - 1             # each text ends at its line's newline
  chunk = delimited.Chunk(b'\n'.join(parts) + b'\n', 1, '\n')
  return split_lists(chunk, end - size, end, sep, max_len)


def check_schema(sequence, scalar, categorical, sep: str, seq_sep: str, seq_max_len: int, seq_shared,
                 prefix: str = '', noun: str = 'fields'):
  """Raises ValueError (one sentence) for an impossible sequence schema.

  sequence: the list columns; scalar: every other column used; categorical: the columns a list
  may share its vocabulary with (`seq_shared`, '' = its own); `prefix` names the config fields.
  """
  both = set(sequence) & set(scalar)
  if both:
    raise ValueError(f'columns {sorted(both)} are both sequence columns and other fields')
  if len(seq_sep) != 1 or seq_sep in (sep, '\n', '\r'):
    raise ValueError(f'{prefix}seq_sep must be one character other than the field separator '
                     f'{sep!r}, got {seq_sep!r}')
  if seq_max_len < 1:
    raise ValueError(f'{prefix}seq_max_len={seq_max_len} must be >= 1')
  if seq_shared and len(seq_shared) != len(sequence):
    raise ValueError(f'{prefix}seq_shared has {len(seq_shared)} entries, one per sequence column '
                     f"({len(sequence)}) expected ('' = a vocabulary of its own)")
  wrong = [c for c in seq_shared if c and c not in categorical]
  if wrong:
    raise ValueError(f'{prefix}seq_shared names {wrong}, which are not categorical {noun} {list(categorical)}')
