"""Bad input rows: counted and skipped by default, or the first one raised with `strict`.

Kinds (each has a test in tests/test_data_bad_input.py):
  blank_line    an empty line
  non_utf8      a line that is not valid UTF-8, or holds a NUL byte
  field_count   too many fields, or fewer than the format allows (Criteo pads short rows)
  bad_label     a label that is not 0 or 1
  non_numeric   an integer / numeric field that does not parse (or a malformed Avazu hour)
  corrupt_gzip  a truncated or corrupt .gz file: reading stops there, earlier rows are kept
  bad_sequence  a list field (sequence) with an empty element: '12||78', '|12', '12|'
  sequence_too_long  a list field with more than seq_reject_len elements (a damaged field)
"""
import numpy as np

KINDS = ('blank_line', 'non_utf8', 'field_count', 'bad_label', 'non_numeric', 'corrupt_gzip',
         'bad_sequence', 'sequence_too_long')
FIRST_LINES = 5  # line numbers kept per kind for the summary


class BadInputError(ValueError):
  """A bad row under strict mode: the message names the file, the line and the reason."""


class BadInput:
  """Counts of skipped rows per kind with their first few line numbers."""

  def __init__(self, strict: bool = False):
    self.strict = strict
    self.counts = {k: 0 for k in KINDS}
    self.lines = {k: [] for k in KINDS}
    self.reasons = {}  # kind -> reason of its first occurrence

  def add(self, kind: str, path: str, lines, reason_of_first: str):
    """Records rows of one kind (`lines`: their 1-based line numbers, ascending)."""
    lines = np.atleast_1d(np.asarray(lines))
    if not len(lines):
      return
    if self.strict:
      raise BadInputError(f'{path}:{int(lines[0])}: {reason_of_first} (--strict stops at the first '
                          'bad row; without it bad rows are counted and skipped)')
    self.counts[kind] += len(lines)
    room = FIRST_LINES - len(self.lines[kind])
    self.lines[kind].extend(int(x) for x in lines[:room])
    self.reasons.setdefault(kind, f'{path}:{int(lines[0])}: {reason_of_first}')

  def merge(self, other: 'BadInput'):
    """Adds the rows of a later chunk's BadInput (same order as reading)."""
    for k in KINDS:
      self.counts[k] += other.counts[k]
      self.lines[k].extend(other.lines[k][:FIRST_LINES - len(self.lines[k])])
      if k in other.reasons:
        self.reasons.setdefault(k, other.reasons[k])

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def to_json(self) -> dict:
    return {k: {'count': self.counts[k], 'first_lines': self.lines[k],
                'first_reason': self.reasons.get(k, '')}
            for k in KINDS if self.counts[k]}

  def summary(self) -> str:
    if not self.total:
      return 'bad rows: none'
    out = [f'bad rows skipped: {self.total}']
    for k in KINDS:
      if self.counts[k]:
        out.append(f'  {k}: {self.counts[k]} (first lines {self.lines[k]}; {self.reasons[k]})')
    return '\n'.join(out)
