"""Prepared Criteo, Avazu and CSV samples train end to end; TFDS copy; missing-data message."""
import os

import numpy as np
import pytest

from deres_jax import data as data_lib
from deres_jax.config import base_config
from deres_jax.data import avazu, criteo, csv_source, preprocess, prepared

DATA = os.path.join(os.path.dirname(__file__), 'data')
CRITEO = [os.path.join(DATA, 'paddlerec_criteo_raw_train_sample.txt'),
          os.path.join(DATA, 'paddlerec_criteo_raw_test_sample.txt')]
QUIET = dict(log=lambda *a: None)


def tiny_config(name, path):
  c = base_config()
  c.data.name, c.data.path = name, path
  c.model.depth, c.model.width, c.model.num_heads, c.model.embed_dim = 1, 8, 2, 4
  c.model.block_size, c.model.head_hidden = 2, (8,)
  c.model.tokenizer, c.model.num_tokens = 'group', 4
  c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.progress = 16, 3, 1, False
  c.eval.batch_size, c.eval.every_steps = 16, 3
  c.ckpt.every_steps = 0
  return c


@pytest.mark.parametrize('name', ['criteo', 'avazu', 'csv'])
def test_prepared_sample_trains_end_to_end(tmp_path, name):
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'prepared')
  c = tiny_config(name, out)
  if name == 'criteo':
    preprocess.prepare(criteo.spec(), CRITEO, out, preprocess.Options(min_count=2), **QUIET)
  elif name == 'avazu':
    preprocess.prepare(avazu.spec(), [os.path.join(DATA, 'deepctr_avazu_sample.txt')], out,
                       preprocess.Options(min_count=2, split=(0.6, 0.2, 0.2)), **QUIET)
  else:  # the DeepCTR CSV: a header, float-formatted integers as dense values
    c.data.csv_files = (os.path.join(DATA, 'deepctr_criteo_sample.txt'),)
    c.data.csv_dense = tuple(f'I{i}' for i in range(1, 14))
    c.data.csv_categorical = tuple(f'C{i}' for i in range(1, 27))
    preprocess.prepare(csv_source.spec_from_config(c.data), list(c.data.csv_files), out,
                       preprocess.Options(min_count=2), **QUIET)
  ds = data_lib.load(c.data)
  n_cat = {'criteo': 39, 'avazu': 24, 'csv': 26}[name]
  assert len(ds.schema.cat_names) == n_cat
  assert len(ds.schema.dense_names) == (13 if name == 'csv' else 0)
  summary = trainer.train_and_evaluate(c, str(tmp_path / 'work'), dataset=ds)
  assert summary['steps'] == 3 and np.isfinite(summary['test_logloss'])
  assert 0.0 <= summary['val_auc'] <= 1.0


def test_missing_prepared_data_prints_the_commands(tmp_path):
  for name in ('criteo', 'avazu'):
    c = base_config()
    c.data.name, c.data.path = name, str(tmp_path / 'nothing')
    c.data.min_count = {'criteo': 10, 'avazu': 2}[name]
    with pytest.raises(data_lib.DataMissingError) as e:
      data_lib.load(c.data)
    assert (f'python launch/prepare_data.py {name} --manual_dir=' in str(e.value)
            and f'--data_dir={tmp_path / "nothing"} --min_count={c.data.min_count}' in str(e.value))
  # A half-written directory (no COMPLETE marker) counts as missing.
  os.makedirs(tmp_path / 'half' / 'train')
  c.data.path = str(tmp_path / 'half')
  with pytest.raises(data_lib.DataMissingError, match='no COMPLETE marker'):
    data_lib.load(c.data)


def test_tfds_arrayrecord_copy_reads_back_without_tensorflow(tmp_path):
  pytest.importorskip('importlib_resources')  # needed by tfds' builder code paths
  from deres_jax.data import tfds_builders  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'prepared')
  preprocess.prepare(criteo.spec(), CRITEO, out, preprocess.Options(min_count=2), **QUIET)
  tfds_builders.build('criteo', out, str(tmp_path / 'tfds'))
  builder = tfds_builders.CriteoCtr(data_dir=str(tmp_path / 'tfds'))  # a fresh reader
  schema, splits, _ = prepared.load_splits(out)
  assert builder.info.metadata['vocab_sizes'] == list(schema.vocab_sizes)
  for split in ('train', 'val', 'test'):
    source = builder.as_data_source(split=split)
    assert len(source) == len(splits[split]['label'])
    for i in (0, len(source) - 1):
      np.testing.assert_array_equal(source[i]['cat'], splits[split]['cat'][i])
      assert source[i]['label'] == splits[split]['label'][i]
