"""Parquet and quoted-CSV input for `launch/predict.py`, read with pyarrow into the one row path.

`launch/predict.py` reads the training format's delimited text with the preparation's own
reader, which splits on the separator and knows no quoting. Two more inputs are read here by
pyarrow (a dependency already; no hand parser):

  * Parquet (`.parquet`, or `--input_format=parquet`): streamed by record batch, columns
    picked by name, so their order in the file does not matter; a list column (a sequence
    field) is joined by its separator as preparation does (`csv_source.as_text`);
  * quoted CSV/TSV (`--input_format=csv`, or `auto` when the first 64 KiB of a text file hold
    a double quote): `pyarrow.csv.open_csv` with the model's separator and RFC 4180 quoting
    ("a,b" is one field, "" an escaped quote), every column read as a string, so numbers are
    parsed by the preparation's code and not by Arrow's type inference.

Each batch is re-emitted as text separated by the ASCII unit separator (as the JSON rows of
the server and the Parquet files of preparation are, `data/csv_source.parquet_chunks`) and
encoded by `features.encode_text`: the same number parsing, bucketing, vocabularies, OOV
counts and bad-row checks as the plain text path, so the scores are identical (tested). A
value holding the unit separator, NUL or a newline is refused with one sentence. Row numbers:
Parquet row r (from 1) is "line" r; a CSV with a header reports row r as line r + 1 (its
physical line when no quoted field spans lines). Every row of a quoted file must have the full
field count (pyarrow refuses shorter rows; the plain reader pads Criteo's short rows).
"""
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from deres_jax.data import csv_source
from deres_jax.serving import features

FORMATS = ('auto', 'text', 'csv', 'parquet')
FORBIDDEN = '[\\x1f\\n\\r\\x00]'   # characters no value may hold in the unit-separated text


def detect_format(path: str, input_format: str = 'auto') -> str:
  """'text' (the plain reader), 'csv' (quoted, pyarrow) or 'parquet' for `path`."""
  if input_format not in FORMATS:
    raise ValueError(f'input format must be one of {FORMATS}, got {input_format!r}')
  if input_format != 'auto':
    return input_format
  if path.endswith('.parquet'):
    return 'parquet'
  with open(path, 'rb') as f:
    head = f.read(2)
  if head == b'\x1f\x8b':   # gzip: the plain reader (quoted gzip input needs --input_format=csv)
    return 'text'
  with open(path, 'rb') as f:
    return 'csv' if b'"' in f.read(1 << 16) else 'text'


def columns_of(spec: features.InputSpec, names) -> tuple:
  """(whether the label is there, the columns to read in the model's order); SchemaError if a feature lacks."""
  have = set(names)
  lacks = [c for c in spec.columns if c not in have]
  if lacks:
    raise features.SchemaError(f'the input lacks the columns {lacks}; the model reads {list(spec.columns)}')
  has_label = spec.row_spec.label in have
  return has_label, tuple(spec.row_spec.columns if has_label else spec.columns)


def _batches(spec: features.InputSpec, path: str, fmt: str, rows_per_batch: int):
  """(first row number, column names, record batches) of a Parquet or quoted-CSV file."""
  if fmt == 'parquet':
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    _, cols = columns_of(spec, names)
    return 1, names, pf.iter_batches(rows_per_batch, columns=list(cols))
  s = spec.row_spec
  read = pa_csv.ReadOptions(block_size=1 << 22)
  if not s.header:   # headerless (Criteo): the columns by position, with or without the label
    with open(path, 'rb') as f:   # the field count of the first row
      width = len(pa_csv.open_csv(f, read_options=pa_csv.ReadOptions(autogenerate_column_names=True),
                                  parse_options=pa_csv.ParseOptions(delimiter=s.sep)).schema.names)
    names = list(s.columns) if width == len(s.columns) else list(spec.columns)
    if width not in (len(s.columns), len(spec.columns)):
      raise features.SchemaError(f'{path} has {width} columns; the model reads {len(spec.columns)} '
                                 f'({list(spec.columns)}), or {len(s.columns)} with the label')
    read = pa_csv.ReadOptions(block_size=1 << 22, column_names=names)
  else:
    with open(path, 'rb') as f:
      names = pa_csv.open_csv(f, read_options=read, parse_options=pa_csv.ParseOptions(delimiter=s.sep)).schema.names
  string_types = {n: pa.string() for n in names}
  reader = pa_csv.open_csv(path, read_options=read, parse_options=pa_csv.ParseOptions(delimiter=s.sep),
                           convert_options=pa_csv.ConvertOptions(column_types=string_types, strings_can_be_null=True,
                                                                 quoted_strings_can_be_null=False))
  _, cols = columns_of(spec, names)
  return 2 if s.header else 1, names, (b.select(list(cols)) for b in reader)


def chunks(spec: features.InputSpec, path: str, fmt: str, rows_per_batch: int = 65_536) -> tuple:
  """(RowSpec to encode with, iterator of (first line, unit-separated text)) of a table file.

  Args:
    spec: the model's input format.
    path: a Parquet file or a (quoted) CSV/TSV in the model's separator.
    fmt: 'parquet' or 'csv' (`detect_format`).
    rows_per_batch: rows per chunk (Parquet; CSV batches follow pyarrow's 4 MiB blocks).
  Returns:
    (rspec, chunks): `features.encode_text(spec, rspec, text, first_line, ...)` encodes each.
  Raises:
    features.SchemaError: a missing feature column, or a value holding a newline or the unit separator.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'the input file {path!r} does not exist')
  first, names, batches = _batches(spec, path, fmt, rows_per_batch)
  has_label, _ = columns_of(spec, names)
  rspec = features.scoring_spec(spec, has_label, sep=features.UNIT_SEP, header=False)

  def generate():
    line = first
    for batch in batches:
      # As preparation reads Parquet: a list column (a sequence field) joined by its separator.
      cols = [csv_source.as_text(c, spec.row_spec.seq_sep) for c in batch.columns]
      for name, c in zip(batch.schema.names, cols):
        bad = pc.match_substring_regex(c, FORBIDDEN)
        if pc.any(bad).as_py():
          row = pc.index(bad, True).as_py()
          raise features.SchemaError(f'{path}: row {line - first + row + 1} field {name!r} holds a newline, NUL or '
                                     'the unit separator \\x1f, which the row format cannot carry')
      # One line per row: the values joined by the unit separator, a null as an empty field.
      joined = pc.binary_join_element_wise(*cols, features.UNIT_SEP, null_handling='replace', null_replacement='')
      yield line, ('\n'.join(joined.to_pylist()) + '\n').encode() if batch.num_rows else b''
      line += batch.num_rows
  return rspec, generate()
