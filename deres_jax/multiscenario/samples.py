"""Multi-scenario CSV files (Scenario-Wise Rec / torch-rechub layouts) read by a format spec.

Each format names its label columns, scenario column and feature columns; the reader
  * fits every vocabulary on the training rows only (id 0 = OOV / missing, ids by first
    occurrence), dense values parse as floats (empty or unparsable = NaN, i.e. missing);
  * maps the scenario column through a vocabulary of the training rows' values: a value
    never seen in training gets id S (= num_scenarios) and is counted in `notes`, and the
    models give such rows the shared parameters only;
  * skips rows with the wrong number of fields or a non-0/1 label, counting them
    (`notes['bad_rows']`), as the CTR preparation path does with bad rows.
Formats (`FORMATS`) follow the files in ../shared/data/multiscenario (README there):
  douban   : label rating (binarised), scenario domain (book/movie/music; real domains)
  aliccp   : labels click, purchase (CTCVR), scenario field 301 (reassigned in the sample)
  kuairand : label is_click, scenario tab (a single tab in the sample)
Splits: given files (Ali-CCP train/val/test) or a seeded random 8:1:1 split of one file.
"""
import csv
import dataclasses
import os

import numpy as np

from deres_jax.data.schema import Schema
from deres_jax.multiscenario.data import MultiScenarioData, check, set_target


@dataclasses.dataclass(frozen=True)
class CsvFormat:
  labels: tuple                 # 0/1 label columns, K of them
  scenario: str                 # scenario column
  categorical: tuple            # columns encoded with a training-rows vocabulary
  dense: tuple = ()             # numeric columns (NaN = missing)
  target: str = ''              # default training target ('' = the last label)


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
}


def _read(path, fmt):
  """Rows of one CSV as {column: list of str}, plus the number of bad rows skipped."""
  with open(path, newline='', encoding='utf-8') as f:
    reader = csv.reader(f)
    header = next(reader)
    want = list(fmt.labels) + [fmt.scenario] + list(fmt.categorical) + list(fmt.dense)
    missing = [c for c in want if c not in header]
    if missing:
      raise ValueError(f'{path} has no column(s) {missing}; its header is {header}.')
    idx = {c: header.index(c) for c in want}
    cols, bad = {c: [] for c in want}, 0
    for row in reader:
      if len(row) != len(header) or any(row[idx[c]] not in ('0', '1') for c in fmt.labels):
        bad += 1
        continue
      for c in want:
        cols[c].append(row[idx[c]])
  return cols, bad


def _float(v):
  try:
    return float(v)
  except ValueError:
    return np.nan


def load(fmt_name: str, files: dict, target: str = '', seed: int = 0) -> MultiScenarioData:
  """Reads `files` ({'train','val','test'} -> path, or {'all': path}) in format `fmt_name`."""
  if fmt_name not in FORMATS:
    raise ValueError(f'unknown multi-scenario CSV format {fmt_name!r}; choose one of {sorted(FORMATS)}.')
  fmt = FORMATS[fmt_name]
  raw, bad = {}, 0
  for split, path in files.items():
    raw[split], b = _read(path, fmt)
    bad += b
  if set(raw) == {'all'}:  # a seeded 8:1:1 random split of one file
    cols = raw.pop('all')
    n = len(cols[fmt.labels[0]])
    part = np.random.default_rng([seed, 8]).permutation(n) % 10
    for split, keep in (('train', part < 8), ('val', part == 8), ('test', part == 9)):
      raw[split] = {c: [v for v, k in zip(vals, keep) if k] for c, vals in cols.items()}
  # Vocabularies of the training rows only (ids by first occurrence; 0 = OOV).
  vocabs = {c: {} for c in fmt.categorical}
  for c in fmt.categorical:
    for v in raw['train'][c]:
      vocabs[c].setdefault(v, len(vocabs[c]) + 1)
  scen_names = tuple(sorted(set(raw['train'][fmt.scenario]), key=lambda v: (len(v), v)))
  scen_vocab = {v: i for i, v in enumerate(scen_names)}
  num_s = len(scen_names)
  splits, unseen = {}, {}
  for split, cols in raw.items():
    labels = np.asarray([[float(v) for v in cols[c]] for c in fmt.labels], np.float32).T
    scen = np.asarray([scen_vocab.get(v, num_s) for v in cols[fmt.scenario]], np.int32)
    unseen[split] = int((scen == num_s).sum())
    cat = np.asarray([[vocabs[c].get(v, 0) for v in cols[c]] for c in fmt.categorical], np.int32).T
    out = {'labels': labels.reshape(-1, len(fmt.labels)), 'scenario': scen,
           'cat': cat.reshape(-1, len(fmt.categorical))}
    if fmt.dense:
      out['dense'] = np.asarray([[_float(v) for v in cols[c]] for c in fmt.dense], np.float32).T
    out['label'] = set_target(out['labels'], fmt.labels, target or fmt.target or fmt.labels[-1])
    splits[split] = out
  schema = Schema(dense_names=fmt.dense, cat_names=fmt.categorical,
                  vocab_sizes=tuple(len(vocabs[c]) + 1 for c in fmt.categorical),
                  num_scenarios=num_s)
  source = f'{fmt_name}:{os.path.dirname(next(iter(files.values())))}'
  return check(MultiScenarioData(schema, splits, fmt.labels, target or fmt.target or fmt.labels[-1],
                                 scen_names, source,
                                 {'bad_rows': bad, 'unseen_scenario_rows': unseen}))
