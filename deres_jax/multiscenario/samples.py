"""Multi-scenario CSV files (Scenario-Wise Rec / torch-rechub layouts) read by a format spec.

Each format names its label columns, scenario column and feature columns; the reader
  * fits every vocabulary on the training rows only (id 0 = OOV, ids by first occurrence; an
    empty field is a value like any other), dense values parse as floats (empty or unparsable
    = NaN, i.e. missing, no other transformation); the vocabularies are kept on the dataset
    (`vocab`, with `raw_format`) for serving on raw values;
  * maps the scenario column through a vocabulary of the training rows' values: a value
    never seen in training gets id S (= num_scenarios) and is counted in `notes`, and the
    models give such rows the shared parameters only;
  * skips rows with the wrong number of fields or a non-0/1 label, counting them
    (`notes['bad_rows']`), as the CTR preparation path does with bad rows.
Formats (`FORMATS`) follow the files in ../shared/data/multiscenario (README there):
  douban   : label rating (binarised), scenario domain (book/movie/music; real domains)
  aliccp   : labels click, purchase (CTCVR), scenario field 301 (reassigned in the sample)
  kuairand : label is_click, scenario tab (a single tab in the sample)
  aliexpress: labels click, conversion; no scenario column: one directory per country
           (the Tianchi layout AliExpress_<CC>/train.csv, test.csv), the country is the scenario
           (`load_aliexpress`).
Your own data: a `CsvFormat` built from the config's schema fields (`format_from_config`;
separator, header or column names, Parquet by the file's suffix); the formats above are
presets of the same fields.
Behaviour sequences (`sequence`: list columns, `12|45|78` oldest first, or Parquet lists) are read
as the CTR preparation reads them (`data/sequences.py`: the same split, keys and cap of the most
recent `seq_max_len` elements, left-padded with -1 into 'seq' [N, F_seq, L]); a list with an
empty element is a bad row. A list column named in `seq_shared` takes that categorical column's
vocabulary (its ids and embedding rows); the others get one of their own, fitted on the kept
elements of the training rows (ids by first occurrence, kept as keys in `seq_vocab`).
Splits: given files (Ali-CCP train/val/test) or a seeded random 8:1:1 split of one file; with
a `group` column (a session or user id, AliExpress `search_id`) the split draws groups, not
rows, so one group never lies in two splits (rows of one session are near-duplicates).
Large files: `max_rows` keeps the first rows of each file (0 = all); this reader holds the
rows in memory, so a full AliExpress country (1.5-11 GB zipped) needs a cap or a bigger machine.
"""
import csv
import dataclasses
import os

import numpy as np

from deres_jax.data import csv_source
from deres_jax.data import sequences
from deres_jax.data.schema import Schema
from deres_jax.multiscenario.data import MultiScenarioData, check, set_target, vocab_keys


@dataclasses.dataclass(frozen=True)
class CsvFormat:
  labels: tuple                 # 0/1 label columns, K of them
  scenario: str                 # scenario column ('' = one scenario per file, named by the caller)
  categorical: tuple            # columns encoded with a training-rows vocabulary
  dense: tuple = ()             # numeric columns (NaN = missing)
  target: str = ''              # default training target ('' = the last label)
  group: str = ''               # session/user column: splits keep each group whole ('' = rows)
  sep: str = ','                # field separator
  header: bool = True           # first line names the columns (else `columns` does)
  columns: tuple = ()           # column names of a file without a header line
  sequence: tuple = ()          # list columns ('12|45|78', oldest first): behaviour histories
  seq_shared: tuple = ()        # per list column: the categorical column whose ids it shares, or ''
  seq_sep: str = '|'            # separator of a list's elements
  seq_max_len: int = 50         # L: the most recent L elements are kept

  def check(self) -> 'CsvFormat':
    """Raises ValueError (one sentence) for an impossible sequence schema; returns self."""
    if not self.sequence:
      if self.seq_shared:
        raise ValueError('data.seq_shared is set but data.sequence_columns is empty.')
      return self
    sequences.check_schema(self.sequence, self.labels + self.categorical + self.dense + (self.scenario,),
                           self.categorical, self.sep, self.seq_sep, self.seq_max_len, self.seq_shared,
                           prefix='data.', noun='columns')
    return self

  def shared_names(self) -> tuple:
    """Per sequence column, the categorical column it shares ('' = its own vocabulary)."""
    return tuple(self.seq_shared) or ('',) * len(self.sequence)


_ALICCP_CAT = ('101', '121', '122', '124', '125', '126', '127', '128', '129', '205', '206',
               '207', '210', '216', '508', '509', '702', '853', '109_14', '110_14', '127_14',
               '150_14')
FORMATS = {
    'douban': CsvFormat(('rating',), 'domain',
                        ('user_id', 'item_id', 'living_place', 'join_time', 'time_bin')),
    'aliccp': CsvFormat(('click', 'purchase'), '301', _ALICCP_CAT,
                        ('D109_14', 'D110_14', 'D127_14', 'D150_14', 'D508', 'D509', 'D702',
                         'D853')),
    'kuairand': CsvFormat(('is_click',), 'tab',
                          ('user_id', 'video_id', 'user_active_degree', 'is_lowactive_period',
                           'is_live_streamer', 'is_video_author', 'follow_user_num_range',
                           'fans_user_num_range', 'friend_user_num_range', 'register_days_range',
                           'video_type'),
                          ('duration_ms',)),
    # AliExpress (Tianchi 74690; torch-rechub sample): search_id, categorical_1..16, numerical_1..63,
    # click, conversion. No scenario column: the country of the file is the scenario.
    'aliexpress': CsvFormat(('click', 'conversion'), '',
                            tuple(f'categorical_{i}' for i in range(1, 17)),
                            tuple(f'numerical_{i}' for i in range(1, 64)), target='conversion',
                            group='search_id'),
}
SCENARIO = '__scenario__'  # the column a per-file scenario name is stored under


def _read(path, fmt, scenario: str = '', max_rows: int = 0):
  """Rows of one CSV (or Parquet) as {column: list of str}, plus the number of bad rows skipped.

  A format without a scenario column takes `scenario` (the file's scenario name) for every row.
  """
  if not fmt.scenario and not scenario:
    raise ValueError(f'{path}: this format has no scenario column; name the scenario of each file.')
  want = list(dict.fromkeys(list(fmt.labels) + ([fmt.scenario] if fmt.scenario else []) +
                            list(fmt.categorical) + list(fmt.dense) + ([fmt.group] if fmt.group else []) +
                            list(fmt.sequence)))
  if str(path).endswith('.parquet'):
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    table = pq.read_table(path)
    header = table.column_names
    missing = [c for c in want if c not in header]
    if missing:
      raise ValueError(f'{path} has no column(s) {missing}; its columns are {header}.')
    table = table.slice(0, max_rows) if max_rows else table
    raw = {c: ['' if v is None else str(v) for v in table.column(c).to_pylist()] for c in want
           if c not in fmt.sequence}
    for c in fmt.sequence:  # a list<...> column joined by seq_sep, as the CTR preparation reads it
      raw[c] = csv_source.as_text(table.column(c), fmt.seq_sep).to_pylist()
    for c in fmt.labels:  # 1.0 / True from a typed column count as 1
      raw[c] = [{'1.0': '1', '0.0': '0', 'True': '1', 'False': '0'}.get(v, v) for v in raw[c]]
    keep = [all(raw[c][i] in ('0', '1') for c in fmt.labels) for i in range(table.num_rows)]
    cols = {c: [v for v, k in zip(vals, keep) if k] for c, vals in raw.items()}
    bad = len(keep) - sum(keep)
  else:
    with open(path, newline='', encoding='utf-8') as f:
      reader = csv.reader(f, delimiter=fmt.sep)
      header = next(reader, None) if fmt.header else list(fmt.columns)
      if not header:
        raise ValueError(f'{path} is empty (no header row).' if fmt.header else
                         f'{path}: header=False needs the column names (data.columns).')
      missing = [c for c in want if c not in header]
      if missing:
        raise ValueError(f'{path} has no column(s) {missing}; its header is {header}.')
      idx = {c: header.index(c) for c in want}
      cols, bad = {c: [] for c in want}, 0
      for row in reader:
        if max_rows and len(cols[want[0]]) >= max_rows:
          break
        if len(row) != len(header) or any(row[idx[c]] not in ('0', '1') for c in fmt.labels):
          bad += 1
          continue
        for c in want:
          cols[c].append(row[idx[c]])
  cols, bad_lists = _drop_bad_lists(cols, fmt)
  if not fmt.scenario:
    cols[SCENARIO] = [scenario] * len(cols[want[0]])
  return cols, bad + bad_lists


def _drop_bad_lists(cols: dict, fmt: CsvFormat):
  """(columns without the rows whose list has an empty element, rows dropped): bad rows."""
  bad = np.zeros(len(next(iter(cols.values()))), bool)
  for c in fmt.sequence:
    bad |= sequences.split_texts(cols[c], fmt.seq_sep, fmt.seq_max_len)[3]
  if not bad.any():
    return cols, 0
  return {c: [v for v, b in zip(vals, bad) if not b] for c, vals in cols.items()}, int(bad.sum())


def format_from_config(data_config) -> CsvFormat:
  """The CsvFormat of `config.data`: a preset (`data.format`, one of FORMATS) or, with
  data.format = '', the schema fields data.scenario_column, label_columns, ... (docs)."""
  name = data_config.get('format', '')
  if name:
    if name not in FORMATS:
      raise ValueError(f"config.data.format={name!r} is not one of {sorted(FORMATS)}; or set "
                       "data.format='' and give the schema (data.scenario_column, data.label_columns, ...).")
    fmt = FORMATS[name]
    return dataclasses.replace(fmt, group=data_config.get('group_column', '') or fmt.group)
  labels, cats = tuple(data_config.label_columns), tuple(data_config.categorical_columns)
  if not labels or not data_config.scenario_column:
    raise ValueError("data.format='' needs data.label_columns (0/1 columns) and "
                     'data.scenario_column (docs/multiscenario.md).')
  if not cats and not data_config.dense_columns:
    raise ValueError('data.categorical_columns and data.dense_columns are both empty: no features.')
  return CsvFormat(labels, data_config.scenario_column, cats, tuple(data_config.dense_columns),
                   group=data_config.group_column, sep=data_config.sep, header=data_config.header,
                   columns=tuple(data_config.columns),
                   sequence=tuple(data_config.get('sequence_columns', ())),
                   seq_shared=tuple(data_config.get('seq_shared', ())),
                   seq_sep=data_config.get('seq_sep', '|'),
                   seq_max_len=data_config.get('seq_max_len', 50)).check()


def group_parts(groups, seed: int, parts: int):
  """A seeded part in [0, parts) per row, drawn per group (rows of a group share it)."""
  _, inverse = np.unique(np.asarray(groups), return_inverse=True)
  order = np.random.default_rng([seed, 9]).permutation(inverse.max(initial=-1) + 1)
  return order[inverse] % parts


def _concat(parts):
  """Column dicts of several files -> one column dict."""
  return {c: [v for p in parts for v in p[c]] for c in parts[0]}


def _float(v):
  try:
    return float(v)
  except ValueError:
    return np.nan


def load(fmt_name, files: dict, target: str = '', seed: int = 0, max_rows: int = 0) -> MultiScenarioData:
  """Reads `files` in format `fmt_name` (a name of FORMATS or a CsvFormat).

  files: {'train','val','test'} -> path, or {'all': path}; for a format without a scenario
  column each path is a list of (scenario name, path) pairs instead.
  """
  if isinstance(fmt_name, CsvFormat):
    fmt, fmt_name = fmt_name, 'csv'
  elif fmt_name not in FORMATS:
    raise ValueError(f'unknown multi-scenario CSV format {fmt_name!r}; choose one of {sorted(FORMATS)}.')
  else:
    fmt = FORMATS[fmt_name]
  scen_col = fmt.scenario or SCENARIO
  raw, bad = {}, 0
  for split, paths in files.items():
    if isinstance(paths, str):
      paths = [('', paths)]
    parts = []
    for name, path in paths:
      cols, b = _read(path, fmt, name, max_rows)
      parts.append(cols)
      bad += b
    raw[split] = _concat(parts)
  if set(raw) == {'all'}:  # a seeded 8:1:1 random split of one file
    cols = raw.pop('all')
    n = len(cols[fmt.labels[0]])
    part = (group_parts(cols[fmt.group], seed, 10) if fmt.group else
            np.random.default_rng([seed, 8]).permutation(n) % 10)
    for split, keep in (('train', part < 8), ('val', part == 8), ('test', part == 9)):
      raw[split] = {c: [v for v, k in zip(vals, keep) if k] for c, vals in cols.items()}
  # Vocabularies of the training rows only (ids by first occurrence; 0 = OOV).
  vocabs = {c: {} for c in fmt.categorical}
  for c in fmt.categorical:
    for v in raw['train'][c]:
      vocabs[c].setdefault(v, len(vocabs[c]) + 1)
  cat_keys = vocab_keys({c: tuple(vocabs[c]) for c in fmt.categorical})
  seq_vocab = _sequence_vocab(fmt, raw['train'])
  seq_keys = tuple(cat_keys[s] if s else seq_vocab[c] for c, s in zip(fmt.sequence, fmt.shared_names()))
  scen_names = tuple(sorted(set(raw['train'][scen_col]), key=lambda v: (len(v), v)))
  scen_vocab = {v: i for i, v in enumerate(scen_names)}
  num_s = len(scen_names)
  splits, unseen = {}, {}
  for split, cols in raw.items():
    labels = np.asarray([[float(v) for v in cols[c]] for c in fmt.labels], np.float32).T
    scen = np.asarray([scen_vocab.get(v, num_s) for v in cols[scen_col]], np.int32)
    unseen[split] = int((scen == num_s).sum())
    cat = np.asarray([[vocabs[c].get(v, 0) for v in cols[c]] for c in fmt.categorical], np.int32).T
    out = {'labels': labels.reshape(-1, len(fmt.labels)), 'scenario': scen,
           'cat': cat.reshape(-1, len(fmt.categorical))}
    if fmt.group:  # group ids (codes of this split) for grouped splits downstream
      out['group'] = np.unique(np.asarray(cols[fmt.group]), return_inverse=True)[1].astype(np.int64)
    if fmt.dense:
      out['dense'] = np.asarray([[_float(v) for v in cols[c]] for c in fmt.dense], np.float32).T
    if fmt.sequence:
      out['seq'] = encode_sequences(fmt, cols, seq_keys)
    out['label'] = set_target(out['labels'], fmt.labels, target or fmt.target or fmt.labels[-1])
    splits[split] = out
  schema = Schema(dense_names=fmt.dense, cat_names=fmt.categorical,
                  vocab_sizes=tuple(len(vocabs[c]) + 1 for c in fmt.categorical),
                  num_scenarios=num_s, seq_names=fmt.sequence,
                  seq_vocab_sizes=tuple(len(k) + 1 for k in seq_keys), seq_shared=fmt.shared_names(),
                  seq_len=fmt.seq_max_len if fmt.sequence else 0)
  first = next(iter(files.values()))
  source = f'{fmt_name}:{os.path.dirname(first if isinstance(first, str) else first[0][1])}'
  return check(MultiScenarioData(schema, splits, fmt.labels, target or fmt.target or fmt.labels[-1],
                                 scen_names, source,
                                 {'bad_rows': bad, 'unseen_scenario_rows': unseen},
                                 vocab={c: tuple(vocabs[c]) for c in fmt.categorical},
                                 raw_format=raw_format(fmt), seq_vocab=seq_vocab))


def _sequence_vocab(fmt: CsvFormat, train: dict) -> dict:
  """{list column with a vocabulary of its own: int64 keys in id order}: the kept elements of
  the training rows, ids by first occurrence (1 + position; 0 = OOV)."""
  out = {}
  for c, shared in zip(fmt.sequence, fmt.shared_names()):
    if not shared:
      keys, kept, _, _ = sequences.split_texts(train[c], fmt.seq_sep, fmt.seq_max_len)
      elements = sequences.elements(keys[:, None], kept[:, None])[0]
      uniq, first = np.unique(elements, return_index=True)
      out[c] = uniq[np.argsort(first, kind='stable')].astype(np.int64)
  return out


def encode_sequences(fmt, cols: dict, seq_keys) -> np.ndarray:
  """int32 'seq' [n, F_seq, L] (-1 = padding) of the list columns' texts: `sequences.split_texts`
  then `sequences.encode_lists` with per field the vocabulary keys `seq_keys` (the serving
  scorer encodes raw rows with the same two functions)."""
  parts = [sequences.split_texts(cols[c], fmt.seq_sep, fmt.seq_max_len) for c in fmt.sequence]
  keys = np.stack([p[0] for p in parts], 1)
  kept = np.stack([p[1] for p in parts], 1)
  return sequences.encode_lists(keys, kept, seq_keys)


def raw_format(fmt: CsvFormat) -> dict:
  """How the raw files of `fmt` look, for serving (`launch/predict.py` reads new files alike)."""
  out = {'scenario_column': fmt.scenario, 'labels': list(fmt.labels), 'group': fmt.group,
         'sep': fmt.sep, 'header': fmt.header, 'columns': list(fmt.columns)}
  if fmt.sequence:
    out.update(sequence=list(fmt.sequence), seq_shared=list(fmt.shared_names()), seq_sep=fmt.seq_sep,
               seq_max_len=fmt.seq_max_len)
  return out


COUNTRIES = ('NL', 'ES', 'FR', 'US', 'RU')  # AliExpress's five countries (scenarios)


def aliexpress_files(data_dir: str, countries=COUNTRIES, val_from_test: bool = True) -> dict:
  """The Tianchi layout DATA_DIR/AliExpress_<CC>/{train,test}.csv -> `load` files, country = scenario.

  AliExpress ships train and test only; with val_from_test the test file of each country is
  split 1:1 into validation and test by `search_id` (a session: its rows never straddle the
  two, so the best checkpoint is not picked on near-duplicates of the test rows), else the
  test file serves as both (say so when reporting).
  """
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f'{data_dir!r} is not a directory; it should hold AliExpress_<country>/ folders.')
  files = {'train': [], 'test': []}
  for cc in countries:
    folder = os.path.join(data_dir, f'AliExpress_{cc}')
    for split in ('train', 'test'):
      path = os.path.join(folder, f'{split}.csv')
      if not os.path.exists(path):
        raise FileNotFoundError(f'{path} is missing: each country needs AliExpress_{cc}/train.csv and test.csv '
                                f'(found {sorted(os.listdir(data_dir))} in {data_dir}).')
      files[split].append((cc, path))
  return files


def load_aliexpress(data_dir: str, countries=COUNTRIES, target: str = 'conversion', max_rows: int = 0,
                    val_from_test: bool = True) -> MultiScenarioData:
  """AliExpress, one scenario per country (see `aliexpress_files`)."""
  files = aliexpress_files(data_dir, countries)
  d = load('aliexpress', files, target, max_rows=max_rows)
  if val_from_test:
    test = d.splits.pop('test')
    part = group_parts(test['group'], 0, 2)
    for split, keep in (('val', part == 0), ('test', part == 1)):
      d.splits[split] = {k: v[keep] for k, v in test.items()}
  else:
    d.splits['val'] = d.splits['test']
  num_s = d.schema.num_scenarios
  d.notes['unseen_scenario_rows'] = {k: int((v['scenario'] == num_s).sum()) for k, v in d.splits.items()}
  d.notes['val_from_test'] = val_from_test
  return check(d)
