"""One chunk of delimited rows -> checked, typed columns, by a `RowSpec` (which columns are
the label, dense, bucketed-integer, categorical, hour and scenario fields).

Every categorical value becomes an exact int64 key; Criteo integers become FuxiCTR's
floor(ln(v)^2) buckets (v > 2; smaller values stay their own category, missing is its own
key); Avazu's YYMMDDHH hour becomes hour-of-day, weekday and weekend keys. Bad rows are
counted in a `BadInput` (or raise under strict mode) and dropped, never misparsed.
Used by `preprocess` (the two-pass preparation) and `csv_source`.

A time-split column (`RowSpec.time`) becomes a float64 sort key per row: a number as it is
(Unix seconds, Avazu's YYMMDDHH, ...), or an ISO 8601 date/time as microseconds since
1970 (exact in float64 until the year 2255).
"""
import dataclasses
import re

import numpy as np

from deres_jax.data import delimited
from deres_jax.data import sequences
from deres_jax.data.bad_input import BadInput

MISSING_INT = np.iinfo(np.int64).min  # key of a missing integer (bucketed / hour) value
HOUR_FIELDS = ('hour', 'weekday', 'weekend')
# ISO 8601 dates/times a time column may hold: a date, optionally a time (T or space) with
# seconds and fractions (to ns, kept to us), optionally a final Z. UTC offsets (+02:00) are rejected.
ISO_TIME = re.compile(rb'\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?Z?')


@dataclasses.dataclass(frozen=True)
class RowSpec:
  """What the columns of a delimited file are and what each becomes."""
  name: str                 # 'criteo' | 'avazu' | 'csv' (recorded with the data)
  columns: tuple            # every column name, in file order
  label: str                # 0/1 click column
  dense: tuple = ()         # numeric columns kept as float32 'dense' (NaN = missing)
  categorical: tuple = ()   # string columns -> vocabulary ids
  bucketed: tuple = ()      # integer columns -> categories floor(ln(v)^2) (v > 2) or v
  scenario: str = ''        # optional column -> 'scenario' ids
  hour: str = ''            # Avazu: a YYMMDDHH column -> hour, weekday, weekend categories
  sep: str = '\t'           # field separator (one character)
  header: bool = False      # the first line of each file holds column names
  min_fields: int = 0       # shorter rows (>= this) are padded as missing; 0 = exact count
  keep_dense: bool = False  # bucketed columns also kept as raw 'dense' values
  time: str = ''            # column ordering the rows for a time split (Parsed.time); may be a feature too
  sequence: tuple = ()      # list columns ('12|45|78', oldest first) -> 'seq' ids (data/sequences.py)
  seq_shared: tuple = ()    # per sequence column: the categorical column whose vocabulary it shares, or ''
  seq_sep: str = '|'        # separator of the elements of a list column
  seq_max_len: int = 50     # L: the most recent L elements are kept, left-padded
  seq_reject_len: int = 100_000  # a list with more elements is a bad row (a damaged field)

  @property
  def cat_names(self) -> tuple:
    out = []
    for c in self.columns:
      if c in self.bucketed or c in self.categorical:
        out.append(c)
      elif c == self.hour:
        out.extend(HOUR_FIELDS)
    return tuple(out)

  @property
  def dense_names(self) -> tuple:
    keep = set(self.dense) | (set(self.bucketed) if self.keep_dense else set())
    return tuple(c for c in self.columns if c in keep)

  def validate(self):
    known = set(self.columns)
    if self.time and self.time not in known:
      raise ValueError(f'the time-split column {self.time!r} is not a column of the input; '
                       f'the columns are {list(self.columns)}')
    used = [self.label, *self.dense, *self.categorical, *self.bucketed]
    used += [c for c in (self.scenario, self.hour) if c]
    missing = [c for c in used if c not in known]
    if missing:
      raise ValueError(f'columns {missing} are not among the file columns {list(self.columns)}')
    if len(self.sep) != 1:
      raise ValueError(f'the separator must be one character, got {self.sep!r}')
    if self.sequence:
      missing = [c for c in self.sequence if c not in known]
      if missing:
        raise ValueError(f'sequence columns {missing} are not among the file columns {list(self.columns)}')
      sequences.check_schema(self.sequence, used, self.cat_names, self.sep, self.seq_sep, self.seq_max_len,
                             self.seq_shared)
    return self

  @property
  def seq_shared_names(self) -> tuple:
    return tuple(self.seq_shared) or ('',) * len(self.sequence)


@dataclasses.dataclass
class Parsed:
  """The good rows of one chunk."""
  line: np.ndarray          # int64 [n] file line numbers
  label: np.ndarray         # float32 [n]
  keys: np.ndarray          # int64 [n, len(cat_names)]
  dense: np.ndarray         # float32 [n, len(dense_names)]
  scenario: np.ndarray      # int64 [n] keys, or None
  time: np.ndarray = None   # float64 [n] time-split sort keys (spec.time), or None
  time_date: np.ndarray = None  # bool [n] the time was an ISO date (else a number), or None
  seq_keys: np.ndarray = None   # int64 [n, F_seq, L] keys of the kept list elements (left-padded), or None
  seq_kept: np.ndarray = None   # int32 [n, F_seq] elements kept per list (the rest is padding), or None


def bucketize(values, missing):
  """FuxiCTR's log-squared bucketing of integer counts, as int64 keys (missing -> MISSING_INT)."""
  with np.errstate(invalid='ignore', divide='ignore'):
    big = np.floor(np.log(np.where(values > 2, values, 3.0)) ** 2)
  keys = np.where(values > 2, big, values)
  return np.where(missing, MISSING_INT, np.nan_to_num(keys).astype(np.int64))


def hour_keys(values, missing):
  """Avazu hour YYMMDDHH -> (hour of day, weekday 0=Monday, weekend 0/1) keys and a validity mask."""
  v = np.where(missing | ~np.isfinite(values), 0, values).astype(np.int64)
  hh, dd, mm, yy = v % 100, v // 100 % 100, v // 10_000 % 100, v // 1_000_000
  month = ((2000 + yy - 1970) * 12 + np.clip(mm - 1, 0, 11)).astype('datetime64[M]')
  date = month.astype('datetime64[D]') + np.clip(dd - 1, 0, 30).astype('timedelta64[D]')
  ok = ((hh < 24) & (mm >= 1) & (mm <= 12) & (dd >= 1) & (v < 100_000_000) & (values >= 0)
        & (date.astype('datetime64[M]') == month))  # 31 Feb would roll over into March
  weekday = (date.astype(np.int64) + 3) % 7   # 1970-01-01 was a Thursday
  keys = np.stack([hh, weekday, (weekday >= 5).astype(np.int64)], axis=-1)
  return np.where(missing[:, None], MISSING_INT, keys), ok | missing


def time_values(chunk: delimited.Chunk, start, end):
  """Time-split sort keys of one field per row: (float64 values, ok, is_date).

  Vectorised over the distinct texts of the chunk (a time column has few): a
  number (delimited.NUMBER) is its value; an ISO 8601 date/time (ISO_TIME) is microseconds
  since 1970-01-01; anything else, an empty field included, is not ok.
  """
  length = end - start
  values, ok, is_date = np.full(len(start), np.nan), np.zeros(len(start), bool), np.zeros(len(start), bool)
  width = min(int(length.max()) if len(length) else 0, 32)  # longer texts are no times
  if not len(start) or not width:
    return values, ok, is_date
  at = start[:, None] + np.arange(width)
  text = np.where(at < end[:, None], chunk.buf[np.minimum(at, len(chunk.buf) - 1)], 0).astype(np.uint8)
  uniq, inverse = np.unique(np.ascontiguousarray(text).view(f'S{width}')[:, 0], return_inverse=True)
  # The patterns only tell digits apart by class: match each distinct "shape" (every digit
  # written as '0', e.g. b'0000-00-00') once; a column has a handful of shapes.
  u8 = uniq.view(np.uint8).reshape(len(uniq), width)
  shape = np.where((u8 >= ord('0')) & (u8 <= ord('9')), ord('0'), u8).astype(np.uint8)
  shapes, s_inverse = np.unique(np.ascontiguousarray(shape).view(f'S{width}')[:, 0], return_inverse=True)
  texts = shapes.tolist()  # 'S' drops the NUL padding; no field holds a NUL
  s_inverse = s_inverse.reshape(-1)
  u_num = np.array([delimited.NUMBER.fullmatch(t) is not None for t in texts], bool)[s_inverse]
  u_date = np.array([ISO_TIME.fullmatch(t) is not None for t in texts], bool)[s_inverse] & ~u_num
  u_val = np.full(len(uniq), np.nan)
  u_val[u_num] = uniq[u_num].astype(np.float64)
  dates = np.char.rstrip(uniq[u_date], b'Z')
  try:  # numpy checks the calendar (no 30 February)
    u_val[u_date] = dates.astype('datetime64[us]').astype(np.int64)
  except ValueError:  # one bad date: parse them one by one
    for i, t in zip(np.flatnonzero(u_date), dates.tolist()):
      try:
        u_val[i] = np.datetime64(t.decode(), 'us').astype(np.int64)
      except ValueError:
        u_date[i] = False
  u_ok = (u_num | u_date) & np.isfinite(u_val)
  inverse = inverse.reshape(-1)
  long = length > width
  return u_val[inverse], u_ok[inverse] & ~long, u_date[inverse] & ~long


def parse_chunk(spec: RowSpec, chunk: delimited.Chunk, path: str, bad: BadInput) -> Parsed:
  """Checks and decodes every line of a chunk; bad lines go to `bad` (strict: raise)."""
  events = []  # (kind, rows, reason of the first): reported in line order below

  def flag(kind, rows, reason):
    if len(rows):
      events.append((kind, np.asarray(rows), reason(rows[0])))

  n_fields = len(spec.columns)
  ok = np.ones(chunk.num_lines, bool)
  if spec.header and chunk.first_line == 1:
    ok[0] = False  # the header line
  blank = ok & chunk.blank()
  flag('blank_line', np.flatnonzero(blank), lambda r: 'blank line')
  ok &= ~blank
  binary = ok & chunk.bad_bytes()
  flag('non_utf8', np.flatnonzero(binary), lambda r: 'not valid UTF-8 (or a NUL byte)')
  ok &= ~binary
  lo = spec.min_fields or n_fields
  wrong = ok & ((chunk.num_fields > n_fields) | (chunk.num_fields < lo))
  want = f'{n_fields}' if lo == n_fields else f'{lo} to {n_fields}'
  flag('field_count', np.flatnonzero(wrong),
       lambda r: f'{chunk.num_fields[r]} fields, expected {want} (separator {spec.sep!r})')
  ok &= ~wrong
  rows = np.flatnonzero(ok)

  col = {c: i for i, c in enumerate(spec.columns)}
  numeric = [spec.label, *spec.dense, *spec.bucketed] + ([spec.hour] if spec.hour else [])
  strings = list(spec.categorical) + ([spec.scenario] if spec.scenario else [])
  start, end = chunk.fields(rows, [col[c] for c in numeric + strings])
  nn = len(numeric)
  values, num_ok, missing = delimited.numbers(chunk, start[:, :nn], end[:, :nn])
  v = {c: (values[:, i], num_ok[:, i], missing[:, i]) for i, c in enumerate(numeric)}

  def where_text(r, j):
    i = np.searchsorted(rows, r)
    return f'{numeric[j]}={chunk.text(start[i, j], end[i, j])!r}'

  lv, lok, lmiss = v[spec.label]
  good = lok & ~lmiss & ((lv == 0) | (lv == 1))
  flag('bad_label', rows[~good], lambda r: f'label {where_text(r, 0)} is not 0 or 1')
  keep = good
  bad_num = ~num_ok[:, 1:]
  for c in spec.bucketed:  # integers: '12.5' is as wrong as 'abc'
    j = numeric.index(c)
    bad_num[:, j - 1] |= num_ok[:, j] & ~missing[:, j] & (values[:, j] != np.floor(values[:, j]))
  if spec.hour:
    hk, hok = hour_keys(*v[spec.hour][::2])
    bad_num[:, -1] |= ~hok
  bad_time = np.zeros(len(rows), bool)
  if spec.time:  # a missing or unparseable time is a bad row like a bad number
    t_start, t_end = chunk.fields(rows, [col[spec.time]])
    t, t_ok, t_date = time_values(chunk, t_start[:, 0], t_end[:, 0])
    bad_time = ~t_ok

  def bad_number_reason(r):
    i = np.searchsorted(rows, r)
    if bad_num[i].any():
      return f'field {where_text(r, 1 + int(np.argmax(bad_num[i])))} is not a valid number'
    return (f'time-split field {spec.time}={chunk.text(t_start[i, 0], t_end[i, 0])!r} is neither a '
            'number nor an ISO 8601 date/time (YYYY-MM-DD[Thh:mm[:ss[.fff]]][Z])')
  bad_row = keep & (bad_num.any(1) | bad_time)
  flag('non_numeric', rows[bad_row], bad_number_reason)
  keep &= ~bad_row
  seq_keys = seq_kept = None
  if spec.sequence:  # lists: an empty element or an absurd length is a bad row
    s_start, s_end = chunk.fields(rows, [col[c] for c in spec.sequence])
    out = [sequences.split_lists(chunk, s_start[:, f], s_end[:, f], spec.seq_sep, spec.seq_max_len)
           for f in range(len(spec.sequence))]
    seq_keys = np.stack([o[0] for o in out], axis=1)
    seq_kept = np.stack([o[1] for o in out], axis=1)
    empty = np.stack([o[3] for o in out], axis=1)
    long = np.stack([o[2] for o in out], axis=1) > spec.seq_reject_len

    def list_reason(bad_mask, what):
      def reason(r):
        i = np.searchsorted(rows, r)
        f = int(np.argmax(bad_mask[i]))
        text = chunk.text(s_start[i, f], min(s_end[i, f], s_start[i, f] + 60))
        return f'sequence field {spec.sequence[f]}={text!r}{"..." if s_end[i, f] - s_start[i, f] > 60 else ""} {what}'
      return reason
    bad_list = keep & empty.any(1)
    flag('bad_sequence', rows[bad_list], list_reason(
        empty, f'has an empty element (separator {spec.seq_sep!r} doubled, leading or trailing)'))
    keep &= ~bad_list
    too_long = keep & long.any(1)
    flag('sequence_too_long', rows[too_long], list_reason(
        long, f'has more than seq_reject_len={spec.seq_reject_len} elements'))
    keep &= ~too_long

  if events:  # report in line order: strict mode stops at the earliest bad line
    for kind, bad_rows, reason in sorted(events, key=lambda e: e[1][0]):
      bad.add(kind, path, chunk.line_numbers(bad_rows), reason)

  # Keys of the categorical fields, in spec.cat_names order.
  keys = []
  skeys = delimited.string_keys(chunk, start[:, nn:], end[:, nn:])
  for c in spec.columns:
    if c in spec.bucketed:
      keys.append(bucketize(v[c][0], v[c][2])[:, None])
    elif c in spec.categorical:
      keys.append(skeys[:, strings.index(c)][:, None])
    elif c == spec.hour:
      keys.append(hk)
  keys = np.concatenate(keys, axis=1) if keys else np.zeros((len(rows), 0), np.int64)
  dense = np.stack([v[c][0] for c in spec.dense_names], axis=1) if spec.dense_names else \
      np.zeros((len(rows), 0))
  return Parsed(
      line=chunk.line_numbers(rows[keep]), label=lv[keep].astype(np.float32),
      keys=keys[keep], dense=dense[keep].astype(np.float32),
      scenario=skeys[keep, -1] if spec.scenario else None,
      time=t[keep] if spec.time else None, time_date=t_date[keep] if spec.time else None,
      seq_keys=seq_keys[keep] if spec.sequence else None,
      seq_kept=seq_kept[keep] if spec.sequence else None)
