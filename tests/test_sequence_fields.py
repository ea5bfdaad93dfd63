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


# ----------------------------------------------------------------------------- models
import flax.linen as nn  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from deres_jax import models  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from deres_jax.data.schema import Schema  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from deres_jax.models import tokenizer as tokenizer_lib  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

SEQ_SCHEMA = Schema(dense_names=('d',), cat_names=('user', 'item', 'cate'), vocab_sizes=(5, 9, 4),
                    seq_names=('hist_item', 'hist_cate', 'tags'), seq_vocab_sizes=(9, 4, 6),
                    seq_shared=('item', 'cate', ''), seq_len=4)


def seq_batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  seq = np.stack([rng.integers(0, v, (n, 4)) for v in SEQ_SCHEMA.seq_vocab_sizes], axis=1)
  kept = rng.integers(0, 5, (n, 1))  # 0..4 valid items, the same for all fields of a row
  seq = np.where(np.arange(4) < 4 - kept[:, :, None], -1, seq).astype(np.int32)
  return {'label': rng.integers(0, 2, n).astype(np.float32),
          'dense': rng.normal(size=(n, 1)).astype(np.float32),
          'cat': np.stack([rng.integers(0, v, n) for v in SEQ_SCHEMA.vocab_sizes], 1).astype(np.int32),
          'seq': seq}


def test_pooled_view_is_the_masked_mean_of_the_shared_rows():
  tok = tokenizer_lib.FeatureTokenizer((5, 9, 4, 9, 4, 6), 1, 3, 3, seq_share=(1, 2, -1),
                                       keep_sequences=True)
  batch = seq_batch()
  params = nn.unbox(tok.init(jax.random.PRNGKey(0), batch)['params'])
  emb, aux = tok.apply({'params': params}, batch)
  table = np.asarray(params['embedding'])
  assert table.shape[0] == 24  # 5 + 9 + 4 + the 6 rows of 'tags' (the histories add none), padded
  cat_off, seq_off = [0, 5, 14], [5, 14, 18]  # the shared histories start at item's / cate's rows
  for f in range(3):
    for b in range(len(batch['label'])):
      ids = batch['seq'][b, f]
      rows = table[ids[ids >= 0] + seq_off[f]]
      want = rows.mean(0) if len(rows) else np.zeros(3)
      np.testing.assert_allclose(np.asarray(emb[b, 1 + 3 + f]), want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(np.asarray(emb[:, 2]), table[batch['cat'][:, 1] + cat_off[1]], rtol=1e-6)
  assert aux['seq_emb'].shape == (8, 3, 4, 3)
  np.testing.assert_array_equal(np.asarray(aux['seq_mask']), batch['seq'] >= 0)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_every_model_builds_on_sequences(name):
  # Shapes only (tracing, no compile): every model takes the pooled sequence fields.
  from tests.test_model_zoo import tiny_model_config  # pylint: disable=g-import-not-at-top
  model = models.build(tiny_model_config(name), SEQ_SCHEMA)
  batch = seq_batch()
  logits = jax.eval_shape(lambda b: model.apply(model.init(jax.random.PRNGKey(0), b), b)[0], batch)
  assert logits.shape == (8,)


@pytest.mark.parametrize('name', ['logreg', 'dnn'])  # compiled: the rest share the tokenizer
def test_models_read_histories_and_ignore_padding(name):
  from tests.test_model_zoo import tiny_model_config  # pylint: disable=g-import-not-at-top
  model = models.build(tiny_model_config(name), SEQ_SCHEMA)
  assert len(model.vocab_sizes) == 6 and model.seq_share == (1, 2, -1)
  batch = seq_batch()
  params = model.init(jax.random.PRNGKey(0), batch)['params']
  # Random parameters everywhere (logreg starts at zero), then one compiled forward pass.
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(1)   # NumPy draws: no kernel compiled per leaf shape
  params = tree.unflatten([x + 0.1 * rng.normal(size=x.shape).astype(np.float32) for x in leaves])
  apply = jax.jit(lambda b: model.apply({'params': params}, b)[0])
  logits = apply(batch)
  assert logits.shape == (8,) and bool(jnp.all(jnp.isfinite(logits)))
  other = dict(batch, seq=np.where(batch['seq'] < 0, -1 - np.arange(4), batch['seq']).astype(np.int32))
  np.testing.assert_allclose(apply(other), logits, rtol=1e-5, atol=1e-6)
  shorter = dict(batch, seq=np.where(np.arange(4) == 3, batch['seq'], -1).astype(np.int32))
  assert not np.allclose(apply(shorter), logits)  # the history counts


def test_byo_csv_config_fields_describe_sequences(tmp_path):
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  from deres_jax.data import csv_source  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.data.csv_files = (write_csv(tmp_path / 'in.csv', ROWS),)
  c.data.csv_categorical = ('user', 'item')
  c.data.csv_sequence, c.data.csv_seq_shared = ('hist', 'tags'), ('item', '')
  c.data.csv_seq_max_len = 3
  assert csv_source.spec_from_config(c.data) == spec()
