"""Sequence fields (lists of ids in one column) through the preparation, the loader and the models."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deres_jax.data import preprocess
from deres_jax.data import prepared
from deres_jax.data.bad_input import BadInputError
from deres_jax.data.rows import RowSpec
from deres_jax.data.vocab import load_vocab

COLUMNS = ('label', 'user', 'item', 'hist', 'tags')
ROWS = [  # label, user, item, history of items (oldest first), tags (a vocabulary of their own)
    ('1', 'u1', 'a', 'b|c|d|e', 'x'),
    ('0', 'u1', 'b', '', 'x|y'),
    ('1', 'u2', 'c', 'a', ''),
    ('0', 'u2', 'd', 'a|b', 'y'),
    ('1', 'u3', 'e', 'zz|a|b|c|d', 'x|x|y'),
    ('0', 'u3', 'a', 'c|d', 'y'),
]


def spec(**kw):
  return RowSpec(name='csv', columns=COLUMNS, label='label', categorical=('user', 'item'),
                 sequence=('hist', 'tags'), seq_shared=('item', ''), sep=',', header=True,
                 seq_max_len=3, **kw)


def write_csv(path, rows, header=COLUMNS):
  path.write_text('\n'.join([','.join(header)] + [','.join(r) for r in rows]) + '\n')
  return str(path)


def prepare_all_train(tmp_path, rows=ROWS, **kw):
  src = write_csv(tmp_path / 'in.csv', rows)
  out = str(tmp_path / 'out')
  summary = preprocess.prepare(spec(**kw), {'train': [src]}, out, preprocess.Options(min_count=1),
                               log=lambda *_: None)
  schema, splits, _ = prepared.load_splits(out)
  return schema, splits['train'], out, summary


def decode(schema, out):
  """id -> text of each field's vocabulary (id 0 -> '<oov>')."""
  vocab, _ = load_vocab(out)
  vocab.update(load_vocab(out, sequence=True))
  from deres_jax.data.delimited import key_of_string
  def inverse(field):
    return {i + 1: k for i, k in enumerate(vocab[field][0].tolist())}
  texts = {t: key_of_string(t.encode()) for r in ROWS for t in [*r[1:3], *r[3].split('|'), *r[4].split('|')] if t}
  by_key = {v: k for k, v in texts.items()}
  return lambda field, i: '<pad>' if i < 0 else '<oov>' if i == 0 else by_key[inverse(field)[i]]


def test_round_trip_order_cap_padding_and_shared_ids(tmp_path):
  schema, train, out, _ = prepare_all_train(tmp_path)
  assert schema.seq_names == ('hist', 'tags') and schema.seq_len == 3
  assert schema.seq_shared == ('item', '') and schema.seq_share_index() == (1, -1)
  seq = np.asarray(train['seq'])
  assert seq.shape == (6, 2, 3) and seq.dtype == np.int32
  name = decode(schema, out)
  got = [[[name(f, int(i)) for i in seq[r, j]] for j, f in enumerate(schema.seq_names)]
         for r in range(6)]
  # Order kept, the cap keeps the most recent 3, left padding, an empty list is all padding.
  assert got[0] == [['c', 'd', 'e'], ['<pad>', '<pad>', 'x']]
  assert got[1] == [['<pad>'] * 3, ['<pad>', 'x', 'y']]
  assert got[2] == [['<pad>', '<pad>', 'a'], ['<pad>'] * 3]
  assert got[4][0] == ['b', 'c', 'd'] and got[4][1] == ['x', 'x', 'y']
  # The shared history uses the scalar field's ids: the same text, the same id.
  cat = np.asarray(train['cat'])
  item_id = {name('item', int(i)): int(i) for i in cat[:, 1]}
  for r in range(6):
    for i in seq[r, 0][seq[r, 0] >= 0]:
      assert item_id[name('hist', int(i))] == i
  assert schema.seq_vocab_sizes[0] == schema.vocab_sizes[1]


def test_oov_in_shared_history_is_zero_not_padding(tmp_path):
  # 'zz' never appears as a scalar item: OOV (id 0) in the history, distinct from padding (-1).
  rows = ROWS[:4] + [('1', 'u3', 'e', 'zz|a', 'x')] + ROWS[5:]
  schema, train, _, _ = prepare_all_train(tmp_path, rows=rows)
  assert train['seq'][4, 0].tolist()[:2] == [-1, 0]


def test_bad_lists_are_counted_and_strict_stops(tmp_path):
  rows = ROWS + [('1', 'u4', 'a', 'b||c', 'x'), ('0', 'u4', 'b', 'a|', 'x'),
                 ('1', 'u5', 'c', '|a', ''), ('0', 'u5', 'a', '|'.join('abcde' * 3), 'x')]
  _, train, _, summary = prepare_all_train(tmp_path, rows=rows, seq_reject_len=10)
  assert len(train['label']) == len(ROWS)
  assert summary['bad_rows']['bad_sequence']['count'] == 3
  assert summary['bad_rows']['sequence_too_long']['count'] == 1
  src = write_csv(tmp_path / 'bad.csv', rows)
  with pytest.raises(BadInputError, match='hist=.b\\|\\|c. has an empty element'):
    preprocess.prepare(spec(), [src], str(tmp_path / 'o2'), preprocess.Options(min_count=1, strict=True),
                       log=lambda *_: None)


def test_bad_spec_is_a_clear_error():
  with pytest.raises(ValueError, match='not categorical fields'):
    RowSpec(name='csv', columns=COLUMNS, label='label', categorical=('user',), sequence=('hist',),
            seq_shared=('item',), sep=',').validate()
  with pytest.raises(ValueError, match='other than the field separator'):
    RowSpec(name='csv', columns=COLUMNS, label='label', sequence=('hist',), seq_sep=',', sep=',').validate()


def test_parquet_list_column_equals_text(tmp_path):
  _, text_train, _, _ = prepare_all_train(tmp_path)
  table = pa.table({'label': [int(r[0]) for r in ROWS], 'user': [r[1] for r in ROWS],
                    'item': [r[2] for r in ROWS],
                    'hist': [r[3].split('|') if r[3] else [] for r in ROWS],
                    'tags': [r[4].split('|') if r[4] else None for r in ROWS]})
  pq.write_table(table, tmp_path / 'in.parquet')
  out = str(tmp_path / 'pq')
  preprocess.prepare(spec(), {'train': [str(tmp_path / 'in.parquet')]}, out,
                     preprocess.Options(min_count=1), log=lambda *_: None)
  _, splits, _ = prepared.load_splits(out)
  np.testing.assert_array_equal(splits['train']['seq'], text_train['seq'])
  np.testing.assert_array_equal(splits['train']['cat'], text_train['cat'])
