"""Reading a prepared dataset directory (written by `preprocess.prepare`).

Layout of `<path>/`:
  COMPLETE                  summary JSON, written last: its absence means "not prepared"
  schema.json               the Schema, the RowSpec and options it was prepared with, and
                            'split': how rows were split (mode, column, thresholds, files)
  vocab.npz                 per field '<f>/keys' (int64, id order from 1) and '<f>/counts'
  {train,val,test}/*.npy    columns: label, cat, dense (if any), scenario (if any), seq (if any)
  tfds/                     optional TFDS ArrayRecord copy (see tfds_builders.py)

Columns are memory-mapped (np.load(mmap_mode='r')): loading is instant and the OS pages
rows in as the batch iterator gathers them.
"""
import json
import os

import numpy as np

from deres_jax.data.schema import Schema

COLUMNS = ('label', 'dense', 'cat', 'scenario', 'seq')


def is_complete(path: str) -> bool:
  return bool(path) and os.path.isfile(os.path.join(path, 'COMPLETE'))


def read_meta(path: str) -> dict:
  with open(os.path.join(path, 'schema.json')) as f:
    return json.load(f)


def load_splits(path: str, splits=('train', 'val', 'test')):
  """(Schema, {split: {column: memory-mapped array}}, meta) of a complete prepared directory."""
  meta = read_meta(path)
  schema = Schema.from_json(meta['schema'])
  out = {}
  for split in splits:
    d = os.path.join(path, split)
    out[split] = {c: np.load(os.path.join(d, f'{c}.npy'), mmap_mode='r')
                  for c in COLUMNS if os.path.exists(os.path.join(d, f'{c}.npy'))}
  return schema, out, meta
