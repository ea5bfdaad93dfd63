"""Scoring a file of new rows (`launch/predict.py`): one probability per input row, in order.

The input is text in the training data's own format (Criteo TSV, Avazu CSV, your CSV, or the
synthetic quickstart's CSV; history columns as `12|45|78`, Parquet as list columns), plain or
gzipped, with or without the label column. It is read
in chunks with the preparation's reader and checks (`features.encode_text`), so memory holds
one chunk whatever the file size. Parquet files and CSV with quoted fields are read by pyarrow
and fed to the same encoder (`table_input.py`).

The output is a CSV `line,probability` with one line per input data line (the header
excluded), in input order: a bad row (counted and skipped as in preparation) keeps its line
with an empty probability, so the output lines up with the input row for row; the number of
lines written is checked against the lines read. `strict` stops at the first bad row instead.
The file appears only when complete (written beside it, then renamed).
"""
import os

import numpy as np

from deres_jax.data import csv_source
from deres_jax.data import delimited
from deres_jax.data.bad_input import BadInput
from deres_jax.serving import features
from deres_jax.serving import table_input


def detect_label(spec: features.InputSpec, path: str) -> bool:
  """Whether the file has the label column: from its header, or the field count of line 1."""
  s = spec.row_spec
  if s.header:
    return features.check_header(spec, csv_source.header_columns(path, s.sep))
  first = next(delimited.read_chunks(path, 1 << 16), (1, b''))[1].split(b'\n', 1)[0].rstrip(b'\r')
  fields = first.count(s.sep.encode()) + 1
  if fields == len(s.columns):
    return True
  if fields == len(s.columns) - 1:
    return False
  if s.min_fields and fields >= s.min_fields:  # Criteo's short rows: trailing fields stripped
    return True
  raise features.SchemaError(
      f'line 1 of {path} has {fields} fields separated by {s.sep!r}; the model\'s input has '
      f'{len(s.columns)} ({list(s.columns)}), or {len(s.columns) - 1} without the label {s.label!r}')


def predict_file(scorer, input_path: str, output_path: str, strict: bool = False,
                 has_label: bool | None = None, chunk_bytes: int = 4 << 20, progress: bool = True,
                 log=print, input_format: str = 'auto') -> dict:
  """Scores every row of `input_path` into `output_path` (see module docstring).

  Args:
    scorer: a `Scorer` (`from_workdir.from_workdir` or `load.load`).
    input_path: the new rows, in the training data's format (plain or .gz).
    output_path: the CSV to write (`line,probability`).
    strict: stop at the first bad row (BadInputError) instead of counting and skipping it.
    has_label: whether the input has the label column; None = detect (header or field count).
    chunk_bytes: text read per chunk.
    progress: show a progress bar (tqdm) over the input's bytes.
    log: printer of the summary.
    input_format: 'auto' (Parquet by suffix, quoted CSV when the text holds a double quote,
      else the plain reader), 'text', 'csv' (quoted, pyarrow) or 'parquet' (table_input.py).
  Returns:
    {'rows', 'scored', 'bad_rows' (per kind), 'oov' ({field: unseen values}), 'output'}.
  """
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f'the input file {input_path!r} does not exist')
  spec = scorer.spec
  fmt = table_input.detect_format(input_path, input_format)
  if fmt != 'text':   # Parquet or quoted CSV: pyarrow, then the same row path (table_input.py)
    rspec, source = table_input.chunks(spec, input_path, fmt)
  else:
    if has_label is None:
      has_label = detect_label(spec, input_path)
    elif spec.row_spec.header:
      features.check_header(spec, csv_source.header_columns(input_path, spec.row_spec.sep))
    rspec = features.scoring_spec(spec, has_label)
    source = delimited.prefetch(delimited.read_chunks(input_path, chunk_bytes))
  bad = BadInput(strict)
  oov = np.zeros(len(spec.oov_names), np.int64)
  rows = scored = 0
  tmp = f'{output_path}.tmp-{os.getpid()}'
  bar = None
  if progress:
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=os.path.getsize(input_path), unit='B', unit_scale=True, desc='score',
               dynamic_ncols=True)
  try:
    with open(tmp, 'w') as out:
      out.write('line,probability\n')
      for first_line, data in source:
        enc = features.encode_text(spec, rspec, data, first_line, input_path, bad)
        probs = scorer.score_encoded(enc)
        # Every data line of the chunk, bad ones with an empty probability.
        first_data = first_line + (1 if rspec.header and first_line == 1 else 0)
        lines = np.arange(first_data, first_data + enc.lines)
        text = np.full(enc.lines, '', dtype=object)
        text[enc.line - first_data] = [f'{p:.9g}' for p in probs]
        out.write(''.join(f'{n},{t}\n' for n, t in zip(lines.tolist(), text)))
        rows += enc.lines
        scored += len(enc.line)
        oov += enc.oov
        if bar is not None:  # compressed or Parquet input: the bar ends early or late, the count is right
          bar.update(min(len(data), bar.total - bar.n))
    if bar is not None:
      bar.close()
    with open(tmp) as f:
      written = sum(1 for _ in f) - 1
    if written != rows or scored + bad.total != rows:
      raise RuntimeError(f'wrote {written} lines for {rows} input rows ({scored} scored, {bad.total} bad): '
                         'the output does not line up with the input')
    os.replace(tmp, output_path)
  except BaseException:
    if bar is not None:
      bar.close()
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  unseen = {f: int(n) for f, n in zip(spec.oov_names, oov) if n}  # sequence fields: unseen elements
  log(f'scored {scored:,} of {rows:,} rows -> {output_path}')
  log(bad.summary())
  if unseen:
    log(f'values not in the training vocabularies (scored with the OOV id 0): {sum(unseen.values()):,} '
        f'in {len(unseen)} fields ({", ".join(f"{k} {v}" for k, v in sorted(unseen.items(), key=lambda x: -x[1])[:8])}'
        f'{", ..." if len(unseen) > 8 else ""})')
  else:
    log('values not in the training vocabularies: none')
  return {'rows': rows, 'scored': scored, 'bad_rows': bad.to_json(), 'bad_total': bad.total,
          'oov': unseen, 'output': os.path.abspath(output_path)}
