"""Your own data: a CSV/TSV/Parquet source described by `config.data.csv_*`.

Text files go through the same reader and checks as Criteo and Avazu (`delimited`,
`preprocess`). Parquet files are streamed by record batch and re-emitted as delimited text
(with the ASCII unit separator, which a value may not contain), so that they too take the
one code path; their "line numbers" in error messages are row numbers + 1.
"""
import gzip
import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from deres_jax.data.rows import RowSpec

PARQUET_SEP = '\x1f'  # ASCII unit separator


def header_columns(path: str, sep: str) -> tuple:
  """Column names from the first line of a text file."""
  with open(path, 'rb') as probe:
    opener = gzip.open if probe.read(2) == b'\x1f\x8b' else open
  with opener(path, 'rb') as f:
    first = f.readline().decode('utf-8').rstrip('\r\n')
  return tuple(name.strip().strip('"') for name in first.split(sep))  # "a","b" headers too


def file_columns(path: str, spec: RowSpec):
  """The column names a file declares (Parquet schema, or header line), or None (no header)."""
  if path.endswith('.parquet'):
    return tuple(pq.read_schema(path).names)
  return header_columns(path, spec.sep) if spec.header else None


def check_same_columns(labelled_paths, spec: RowSpec):
  """Raises one ValueError naming every file whose columns differ from the first file's.

  Args:
    labelled_paths: (label, path) pairs, e.g. ('train', 'a.csv'); the first is the reference.
    spec: the row format (its separator and header flag; headerless text is not checked).
  Text files are read by position, so their headers must match in order too; Parquet columns
  are read by name, so a Parquet file only has to hold the same set.
  """
  named = [(label, p, file_columns(p, spec)) for label, p in labelled_paths]
  named = [x for x in named if x[2] is not None]
  if len(named) < 2:
    return
  ref_label, ref_path, ref = named[0]
  problems = []
  for label, path, cols in named[1:]:
    by_name = path.endswith('.parquet') or ref_path.endswith('.parquet')
    if cols == ref or (by_name and set(cols) == set(ref)):
      continue
    lacks, extra = [c for c in ref if c not in cols], [c for c in cols if c not in ref]
    what = (f'lacks {lacks}' if lacks else '') + (' and ' if lacks and extra else '') + \
        (f'has extra {extra}' if extra else '')
    problems.append(f'  {label} {path}: {what or "the same columns in another order"}')
  if problems:
    raise ValueError(f'the input files do not have the same columns as {ref_label} {ref_path} '
                     f'({len(ref)} columns):\n' + '\n'.join(problems))


def spec_from_config(data_config) -> RowSpec:
  """The RowSpec of `config.data.csv_*` (the columns come from the header if not given)."""
  files = tuple(data_config.csv_files)
  if not files:
    raise ValueError('config.data.csv_files is empty: name the CSV/TSV/Parquet files to prepare')
  columns = tuple(data_config.csv_columns)
  if not columns:
    first = files[0]
    if not os.path.isfile(first):
      raise FileNotFoundError(f'input file {first!r} does not exist')
    if first.endswith('.parquet'):
      columns = tuple(pq.read_schema(first).names)
    elif data_config.csv_header:
      columns = header_columns(first, data_config.csv_sep)
    else:
      raise ValueError('config.data.csv_columns is empty and csv_header is False: name the columns')
  return RowSpec(name='csv', columns=columns, label=data_config.csv_label,
                 dense=tuple(data_config.csv_dense), categorical=tuple(data_config.csv_categorical),
                 bucketed=tuple(data_config.csv_bucketed), scenario=data_config.csv_scenario,
                 sep=data_config.csv_sep, header=bool(data_config.csv_header),
                 sequence=tuple(data_config.get('csv_sequence', ())),
                 seq_shared=tuple(data_config.get('csv_seq_shared', ())),
                 seq_sep=data_config.get('csv_seq_sep', '|'),
                 seq_max_len=data_config.get('csv_seq_max_len', 50)).validate()


def as_text(column, seq_sep):
  """A Parquet column as strings; a list column (a sequence field) joined by `seq_sep`.

  Also the reader of Parquet input to scoring (serving/table_input.py), so that a list column
  becomes the same text at training and at serving time.
  """
  if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
    items = column.cast(pa.list_(pa.string()))
    return pc.fill_null(pc.binary_join(items, seq_sep), '')  # a null list: an empty one
  return column.cast(pa.string())


def parquet_chunks(path: str, columns, rows_per_chunk: int = 65_536, seq_sep: str = '|'):
  """Yields (first_line, bytes) of a Parquet file as PARQUET_SEP-separated text, no header.

  A list column (e.g. list<int64>, a behaviour history) becomes one field of its elements
  joined by `seq_sep`, the text form `sequences.split_lists` reads.
  """
  pf = pq.ParquetFile(path)
  line = 1
  options = pa_csv.WriteOptions(include_header=False, delimiter=PARQUET_SEP, quoting_style='none')
  for batch in pf.iter_batches(rows_per_chunk, columns=list(columns)):
    batch = pa.RecordBatch.from_arrays(
        [as_text(c, seq_sep) for c in batch.columns], names=batch.schema.names)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(batch, sink, options)
    yield line, sink.getvalue().to_pybytes()
    line += batch.num_rows
