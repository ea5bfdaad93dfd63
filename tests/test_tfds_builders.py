"""The TFDS ArrayRecord copy of any prepared dataset (tfds_builders.PreparedCtr), histories included."""
import os
import subprocess
import sys

import numpy as np
import pytest

from deres_jax.data import prepared

pytest.importorskip('importlib_resources')  # needed by tfds' builder code paths
from deres_jax.data import tfds_builders  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMAZON = os.path.join(ROOT, 'tests', 'data', 'genrec', 's3rec')
CONFIG = """from deres_jax.config import base_config


def get_config():
  c = base_config()
  c.data.name = 'csv'
  c.data.csv_files = ({csv!r},)
  c.data.csv_dense = ('price',)
  c.data.csv_categorical = ('user', 'item')
  c.data.csv_sequence, c.data.csv_seq_shared = ('hist', 'tags'), ('item', '')
  c.data.csv_seq_max_len = 4
  c.data.csv_scenario = 'domain'
  c.data.min_count = 1
  return c
"""


def write_sample(tmp_path, n=300):
  """A CSV with a dense column (some missing), two categorical ones, two histories and a scenario."""
  rng = np.random.default_rng(0)
  lines = ['label,user,item,price,hist,tags,domain']
  for i in range(n):
    hist = '|'.join(f'i{j}' for j in rng.integers(0, 30, rng.integers(0, 7)))  # 0..6 items: empty, capped
    tags = '|'.join(f't{j}' for j in rng.integers(0, 5, rng.integers(0, 3)))
    price = '' if i % 7 == 0 else f'{rng.uniform(0, 100):.2f}'
    lines.append(f'{i % 2},u{rng.integers(0, 40)},i{rng.integers(0, 30)},{price},{hist},{tags},d{i % 3}')
  (tmp_path / 'clicks.csv').write_text('\n'.join(lines) + '\n')
  config = tmp_path / 'my_config.py'
  config.write_text(CONFIG.format(csv=str(tmp_path / 'clicks.csv')))
  return config


def prepare_cli(*args):
  result = subprocess.run([sys.executable, 'launch/prepare_data.py', *args, '--tfds'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'TFDS ArrayRecord copy: ' in result.stdout
  return result


def assert_same_rows(builder, out, every=1):
  """Record i of each split is row i of the prepared columns: label, cat, dense, seq, scenario."""
  schema, splits, meta = prepared.load_splits(out)
  assert tfds_builders.schema_of(builder) == schema
  assert builder.info.metadata['prepared_with']['spec'] == meta['spec']
  features = builder.info.features
  assert set(features.keys()) == set(splits['train'])
  for split, cols in splits.items():
    source = builder.as_data_source(split=split)
    assert len(source) == len(cols['label']) > 0
    for i in range(0, len(source), every):
      record = source[i]
      assert set(record) == set(cols)
      for k in cols:
        if cols[k].ndim > 1:  # scalars ('label') come back as Python numbers
          assert record[k].dtype == cols[k].dtype, k
        np.testing.assert_array_equal(record[k], cols[k][i], err_msg=f'{split}[{i}] {k}')
  return schema


def test_csv_with_histories_copy_equals_the_prepared_columns(tmp_path):
  out = str(tmp_path / 'prepared')
  result = prepare_cli('csv', f'--config={write_sample(tmp_path)}', f'--data_dir={out}')
  assert f'{out}/tfds/prepared_ctr/1.0.0' in result.stdout
  builder = tfds_builders.PreparedCtr(data_dir=os.path.join(out, 'tfds'))  # a fresh reader
  schema = assert_same_rows(builder, out)
  assert schema.dense_names == ('price',) and schema.cat_names == ('user', 'item')
  assert schema.seq_names == ('hist', 'tags') and schema.seq_len == 4 and schema.seq_shared == ('item', '')
  assert schema.num_scenarios == 4 and builder.info.metadata['num_scenarios'] == 4  # d0..d2 and the OOV id
  meta = builder.info.metadata
  assert meta['seq_names'] == ['hist', 'tags'] and meta['seq_len'] == 4 and meta['seq_shared'] == ['item', '']
  assert meta['vocab_sizes'] == list(schema.vocab_sizes) and meta['seq_vocab_sizes'] == list(schema.seq_vocab_sizes)
  assert builder.info.features['seq'].shape == (2, 4) and builder.info.features['dense'].shape == (1,)
  seq = np.stack([r['seq'] for r in builder.as_data_source(split='train')])
  assert (seq == -1).any() and (seq[:, :, -1] >= 0).any()  # padding and real items both came through
  assert np.isnan(np.stack([r['dense'] for r in builder.as_data_source(split='train')])).any()


def test_amazon_copy_and_a_builder_without_prepared_data(tmp_path):
  out = str(tmp_path / 'amazon')
  prepare_cli('amazon', '--category=beauty', f'--manual_dir={AMAZON}', f'--data_dir={out}')
  builder = tfds_builders.PreparedCtr(data_dir=os.path.join(out, 'tfds'))
  schema = assert_same_rows(builder, out, every=97)
  assert schema.seq_names == ('hist_item_id', 'hist_category') and 'dense' not in builder.info.features
  with pytest.raises(ValueError, match='prepared_dir='):
    tfds_builders.PreparedCtr(data_dir=str(tmp_path / 'empty')).download_and_prepare()
