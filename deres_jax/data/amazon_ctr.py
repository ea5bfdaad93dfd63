"""Amazon Beauty / Sports / Toys (2014, 5-core) as CTR data with behaviour histories.

The DIN protocol (Zhou et al., KDD 2018, §6.1 "Amazon Dataset"), on the S3-Rec copies of the
5-core data (`../shared/data/amazon/s3rec/`: `<Name>.txt` one user per line, items in time
order; `<Name>_item2attributes.json` the category-path entries and brand of each item):

  * every interaction i_t of a user with t >= 2 is a positive (label 1) whose history is the
    user's earlier items i_1..i_{t-1} (the first has no history and is not a row);
  * one negative (label 0) per positive: the same user and history with an item drawn
    uniformly from the items the user never interacted with (in the whole sequence);
  * the last interaction of each user (and its negative) is test, the one before validation,
    the rest train (leave-one-out, so every user has one validation and one test positive).

Features: `user_id`, `item_id`, `category`, `brand` (categorical), `hist_item_id` (sharing
item_id's ids and table) and `hist_category` (the category of each history item, sharing
category's). The attributes carry no names, so brand and category are told apart by position
(S3-Rec writes the brand first, then the category path): an attribute that never appears
after the first place is a brand; an item's category is its last non-brand attribute (the
deepest level of its path), an item without a brand attribute has brand = missing.

The rows are written as CSV (history '12|45|78') and prepared by `preprocess.prepare` with
the split by file: the same path as your own CSV with sequence fields (min_count 1).
"""
import collections
import json
import os
import shutil

import numpy as np

from deres_jax.data import preprocess
from deres_jax.data.rows import RowSpec

# --category -> the S3-Rec file stem.
CATEGORIES = {'beauty': 'Beauty', 'sports': 'Sports_and_Outdoors', 'toys': 'Toys_and_Games'}
COLUMNS = ('label', 'user_id', 'item_id', 'category', 'brand', 'hist_item_id', 'hist_category')
DEFAULT_DIR = '../shared/data/amazon/s3rec'
SEQ_MAX_LEN = 50  # DIN's Amazon histories are capped likewise; 5-core Beauty has mean length 8.9


def spec(max_len: int = SEQ_MAX_LEN) -> RowSpec:
  """The row format of the written CSV."""
  return RowSpec(name='amazon', columns=COLUMNS, label='label',
                 categorical=('user_id', 'item_id', 'category', 'brand'),
                 sequence=('hist_item_id', 'hist_category'), seq_shared=('item_id', 'category'),
                 sep=',', header=True, seq_max_len=max_len)


def read(sequences_path: str, attributes_path: str):
  """({user: [items in time order]}, {item: category}, {item: brand}) of the S3-Rec files."""
  users = {}
  with open(sequences_path) as f:
    for line in f:
      parts = line.split()
      if len(parts) >= 2:
        users[parts[0]] = parts[1:]
  with open(attributes_path) as f:
    attrs = json.load(f)
  later = {a for v in attrs.values() for a in v[1:]}  # never first => part of a category path
  category, brand = {}, {}
  for item, v in attrs.items():
    cats = [a for a in v if a in later or a != v[0]]
    if v and v[0] not in later:
      brand[item] = str(v[0])
    if cats:
      category[item] = str(cats[-1])
  return users, category, brand


def build_rows(users, seed: int = 0):
  """The DIN-protocol rows per split: {'train'|'val'|'test': list of row tuples (COLUMNS)}.

  Args:
    users: {user: [items in time order]} (every user needs >= 3 items).
    seed: the negative sampling seed.
  Returns:
    {split: [(label, user, item, history tuple)]} with one negative after each positive.
  """
  items = sorted({i for seq in users.values() for i in seq})
  rng = np.random.default_rng(seed)
  out = collections.defaultdict(list)
  for user, seq in users.items():
    if len(seq) < 3:
      raise ValueError(f'user {user} has {len(seq)} interactions; the protocol needs >= 3 '
                       '(5-core data has >= 5)')
    seen = set(seq)
    if len(seen) == len(items):
      raise ValueError(f'user {user} interacted with every item: no negative to sample')
    for t in range(1, len(seq)):
      split = 'test' if t == len(seq) - 1 else 'val' if t == len(seq) - 2 else 'train'
      neg = items[rng.integers(len(items))]
      while neg in seen:  # rejection: a user's items are a tiny share of the catalogue
        neg = items[rng.integers(len(items))]
      history = tuple(seq[:t])
      out[split].append((1, user, seq[t], history))
      out[split].append((0, user, neg, history))
  return dict(out)


def write_csv(path: str, rows, category, brand):
  """Writes rows as the CSV of `spec()` (atomically: a temporary file, then a rename)."""
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(','.join(COLUMNS) + '\n')
    for label, user, item, hist in rows:
      f.write(f"{label},{user},{item},{category.get(item, '')},{brand.get(item, '')},"
              f"{'|'.join(hist)},{'|'.join(category.get(i, '0') for i in hist)}\n")
  os.rename(tmp, path)


def prepare(category: str, out_dir: str, source_dir: str = DEFAULT_DIR, seed: int = 0,
            max_len: int = SEQ_MAX_LEN, overwrite: bool = False, log=print) -> dict:
  """Builds the CTR rows of one Amazon category and prepares them into `out_dir`.

  Args:
    category: 'beauty' | 'sports' | 'toys' (or an S3-Rec file stem such as 'Beauty').
    out_dir: the prepared directory (config.data.path), written atomically by preprocess.
    source_dir: the directory holding `<Stem>.txt` and `<Stem>_item2attributes.json`.
    seed: the negative sampling seed.
    max_len: L, the history cap (the most recent items are kept).
    overwrite: replace an existing `out_dir`.
    log: progress printer.
  Returns:
    The preparation summary (rows per split, bad rows) with the protocol's statistics.
  """
  stem = CATEGORIES.get(category, category)
  seq_path = os.path.join(source_dir, f'{stem}.txt')
  attr_path = os.path.join(source_dir, f'{stem}_item2attributes.json')
  missing = [p for p in (seq_path, attr_path) if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f'{missing} not found: --manual_dir must hold the S3-Rec files '
                            f'<Stem>.txt and <Stem>_item2attributes.json (stems {sorted(CATEGORIES.values())}); '
                            'see ../shared/data/amazon/README.md')
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f'{out_dir} already exists; pass overwrite=True (--overwrite) to replace it')
  users, cat_of, brand_of = read(seq_path, attr_path)
  rows = build_rows(users, seed)
  work = f'{out_dir}.csv-{os.getpid()}'
  os.makedirs(work, exist_ok=True)
  try:
    files = {}
    for split, split_rows in rows.items():
      files[split] = [os.path.join(work, f'{split}.csv')]
      write_csv(files[split][0], split_rows, cat_of, brand_of)
    summary = preprocess.prepare(spec(max_len), files, out_dir, preprocess.Options(min_count=1),
                                 overwrite=overwrite, log=log)
  finally:
    shutil.rmtree(work, ignore_errors=True)
  summary['amazon'] = {'category': stem, 'users': len(users), 'seed': seed, 'max_len': max_len,
                       'items': len({i for s in users.values() for i in s}),
                       'interactions': sum(len(s) for s in users.values())}
  tmp = os.path.join(out_dir, f'amazon.json.tmp-{os.getpid()}')
  with open(tmp, 'w') as f:
    json.dump(summary['amazon'], f, indent=2)
  os.rename(tmp, os.path.join(out_dir, 'amazon.json'))
  return summary
