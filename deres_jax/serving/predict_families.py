"""`launch/predict.py` for the other families: recommendations of a genrec model, scores of a
multi-scenario model, from text, quoted CSV or Parquet (pyarrow), written atomically.

Generative retrieval (`recommend_file`): one history per input row, oldest item first.
  * text: each line holds the item ids separated by spaces or commas (a blank line is an
    empty history);
  * CSV with a header or Parquet: a `history` column (Parquet: a list of integers; CSV: the
    ids in one field separated by spaces) and optionally `user` (TIGER's or COBRA's user token).
Output CSV `line,items,scores,unknown,truncated`: the k items and scores space-separated, best
first; a row whose history is not a list of integers keeps its line with empty fields and is
counted (`--strict` stops instead).

Multi-scenario (`score_scenario_file`): a CSV or Parquet file; columns the model does not read,
such as labels, are ignored. Output `line,probability`; rows of scenarios unseen in training are
scored by the shared path and counted (`scenario_scorer.py`).
  * an export with vocabularies (a dataset read from CSV/Parquet): a file of the training
    files' format (`raw_format`: separator, header or column names), raw values, the scenario
    in the format's scenario column (or a `scenario` column, or `scenario=` for a file of one
    scenario, as AliExpress's per-country files). A CSV is read as text, as training read it
    (quoted fields allowed; an empty field is the missing value).
    Sequence fields (behaviour histories) are read as training read them: the list text
    (`12|45|78`) of a CSV, a list column of a Parquet file.
  * an export in ids (synthetic data): a CSV with a header or Parquet in the encoded schema with
    a `scenario` column.

Line numbers are the input's data row numbers from 1 (a text file's line numbers).
"""
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from deres_jax.serving.features import SchemaError
from deres_jax.serving.retriever import RequestError


def _table_rows(path: str, columns, rows_per_batch: int = 4096, raw: dict | None = None):
  """Yields lists of row dicts (only `columns` that the file has) of a CSV-with-header or Parquet file.

  `raw`: a multi-scenario raw format (`samples.raw_format`): the CSV's separator and header (or
  column names), every column read as text with '' kept (not null), as the training loader reads.
  """
  if path.endswith('.parquet'):
    batches = pq.ParquetFile(path).iter_batches(rows_per_batch)
  elif raw is not None:
    read = pa_csv.ReadOptions(column_names=None if raw.get('header', True) else list(raw['columns']))
    text = pa_csv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=False,
                                 quoted_strings_can_be_null=False)
    batches = pa_csv.open_csv(path, read, pa_csv.ParseOptions(delimiter=raw.get('sep', ',')), text)
  else:
    batches = pa_csv.open_csv(path, convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))
  for batch in batches:
    keep = [c for c in batch.schema.names if c in columns]
    yield pa.Table.from_batches([batch]).select(keep).to_pylist()


def _write(output_path: str, header: str, lines):
  tmp = f'{output_path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'w') as out:
      out.write(header + '\n')
      for text in lines:
        out.write(text)
    os.replace(tmp, output_path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _histories(path: str):
  """Yields (histories, users or None) batches of a history file (see module docstring)."""
  if path.endswith('.parquet') or _has_history_header(path):
    for rows in _table_rows(path, ('history', 'user')):
      hist = [r.get('history') for r in rows]
      hist = [h.replace(',', ' ').split() if isinstance(h, str) else ([] if h is None else h) for h in hist]
      users = [r.get('user') for r in rows] if rows and 'user' in rows[0] else None
      yield hist, users
    return
  with open(path) as f:
    batch = []
    for line in f:
      batch.append(line.replace(',', ' ').split())
      if len(batch) == 1024:
        yield batch, None
        batch = []
    if batch:
      yield batch, None


def _has_history_header(path: str) -> bool:
  with open(path) as f:
    first = f.readline()
  return 'history' in first.replace('"', '').replace(',', ' ').split()


def _ints(h):
  try:
    return [int(v) for v in h]
  except (TypeError, ValueError):
    return None


def recommend_file(retriever, input_path: str, output_path: str, k: int = 10, strict: bool = False,
                   log=print) -> dict:
  """Writes the top-k items of every history in `input_path` to `output_path` (module docstring).

  Args:
    retriever: a `Retriever` (`serving.load` of a genrec export).
    input_path: histories (text, CSV with a `history` column, or Parquet).
    output_path: the CSV to write.
    k: items per history.
    strict: stop at the first row that is not a list of integer ids.
    log: printer of the summary.
  Returns:
    {'rows', 'recommended', 'bad_rows', 'unknown_ids', 'truncated_rows', 'output'}.
  """
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f'the input file {input_path!r} does not exist')
  retriever.beam_for(k)
  stats = {'rows': 0, 'recommended': 0, 'bad_rows': 0, 'unknown_ids': 0, 'truncated_rows': 0}

  def lines():
    for hist, users in _histories(input_path):
      parsed = [_ints(h) for h in hist]
      good = [i for i, h in enumerate(parsed) if h is not None]
      if strict and len(good) < len(parsed):
        bad = next(i for i, h in enumerate(parsed) if h is None)
        raise RequestError(f'{input_path}: row {stats["rows"] + bad + 1}: the history is not a list of integer ids')
      u = None if users is None else [int(users[i] or 0) for i in good]
      recs = dict(zip(good, retriever.recommend([parsed[i] for i in good], k, u))) if good else {}
      out = []
      for i in range(len(parsed)):
        stats['rows'] += 1
        rec = recs.get(i)
        if rec is None:
          stats['bad_rows'] += 1
          out.append(f'{stats["rows"]},,,,\n')
          continue
        stats['recommended'] += 1
        stats['unknown_ids'] += rec.unknown
        stats['truncated_rows'] += rec.truncated > 0
        out.append(f'{stats["rows"]},{" ".join(map(str, rec.items.tolist()))},'
                   f'{" ".join(f"{s:.6g}" for s in rec.scores.tolist())},{rec.unknown},{rec.truncated}\n')
      yield ''.join(out)
  _write(output_path, 'line,items,scores,unknown,truncated', lines())
  log(f'recommended {k} items for {stats["recommended"]:,} of {stats["rows"]:,} histories -> {output_path} '
      f'({stats["bad_rows"]} bad rows, {stats["unknown_ids"]} unknown item ids dropped, '
      f'{stats["truncated_rows"]} histories truncated to the last {retriever.max_len})')
  return dict(stats, output=os.path.abspath(output_path))


def score_scenario_file(scorer, input_path: str, output_path: str, log=print, scenario: str = '') -> dict:
  """Writes the probability of every row of a multi-scenario CSV/Parquet file (module docstring).

  Args:
    scorer: a `ScenarioScorer` (`serving.load` of a multi-scenario export, or `in_process`).
    input_path: rows with a scenario column: raw values in the training files' format for an
      export with vocabularies, else the encoded schema (CSV with a header, or Parquet).
    output_path: the CSV to write (`line,probability`).
    log: printer of the summary.
    scenario: the scenario of every row, for a file without a scenario column ('' = read it).
  Returns:
    {'rows', 'unseen_scenarios', 'oov', 'output'}.
  Raises:
    SchemaError: a missing column or a value that does not fit (naming the row).
  """
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f'the input file {input_path!r} does not exist')
  raw = (scorer.info.get('raw_format') or {}) if getattr(scorer, 'raw', False) else None
  seq_names = tuple(getattr(scorer, 'seq_names', ()))   # histories: the training file's list text
  columns = (*scorer.dense_names, *scorer.cat_names, *seq_names, 'scenario', scorer.scenario_column)
  stats = {'rows': 0, 'unseen_scenarios': 0, 'oov': np.zeros(len(scorer.cat_names) + len(seq_names), np.int64)}

  def lines():
    for rows in _table_rows(input_path, tuple(dict.fromkeys(columns)), raw=raw):
      if scenario:
        rows = [dict({k: v for k, v in r.items() if k not in ('scenario', scorer.scenario_column)}, scenario=scenario)
                for r in rows]
      try:
        probs, unseen, oov = scorer.score_rows(rows)
      except SchemaError as e:   # 'row i ...' of the batch -> the file's row
        raise SchemaError(f'{input_path}: batch from row {stats["rows"] + 1}: {e}') from None
      yield ''.join(f'{stats["rows"] + i + 1},{p:.9g}\n' for i, p in enumerate(probs.tolist()))
      stats['rows'] += len(rows)
      stats['unseen_scenarios'] += unseen
      stats['oov'] += oov
  _write(output_path, 'line,probability', lines())
  what = 'values not in the vocabularies' if raw is not None else 'ids not in the vocabularies'
  log(f'scored {stats["rows"]:,} rows -> {output_path} ({stats["unseen_scenarios"]} of an unseen scenario, '
      f'scored by the shared path; {int(stats["oov"].sum())} {what})')
  return dict(stats, oov=stats['oov'].tolist(), output=os.path.abspath(output_path))
