"""predict.py's Parquet and quoted-CSV inputs (serving/table_input.py) score like the plain CSV.

No model is trained: the Scorer wraps a fixed random function of the encoded ids and dense
values, so any difference in parsing, column order, missing values or vocabulary lookup
shows up as a different score.
"""
import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deres_jax.data import delimited
from deres_jax.data.bad_input import BadInput
from deres_jax.data.rows import RowSpec, parse_chunk
from deres_jax.serving import features, predict
from deres_jax.serving.scorer import Scorer

COLUMNS = ('label', 'I1', 'I2', 'B1', 'C1', 'C2')
SPEC = RowSpec(name='csv', columns=COLUMNS, label='label', dense=('I1', 'I2'), bucketed=('B1',),
               categorical=('C1', 'C2'), sep=',', header=True)


def _rows(n=300, seed=0):
  rng = np.random.default_rng(seed)
  words = ['red', 'green', 'blue', 'dark red', 'x1', 'y2', 'teal', 'navy']
  rows = []
  for i in range(n):
    rows.append({'label': int(rng.integers(2)),
                 'I1': None if i % 7 == 3 else float(rng.integers(-40, 40)) / 4,
                 'I2': float(rng.integers(0, 1000)) / 8,
                 'B1': None if i % 11 == 5 else int(rng.integers(0, 500)),
                 'C1': None if i % 13 == 6 else words[rng.integers(len(words))],
                 'C2': int(rng.integers(0, 30))})
  return rows


def _text(v):
  return '' if v is None else (f'{v!r}' if isinstance(v, float) else str(v))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
  d = tmp_path_factory.mktemp('formats')
  rows = _rows()
  plain = d / 'plain.csv'
  plain.write_text(','.join(COLUMNS) + '\n' + ''.join(','.join(_text(r[c]) for c in COLUMNS) + '\n' for r in rows))
  quoted = d / 'quoted.csv'
  with open(quoted, 'w', newline='') as f:   # every non-empty field quoted, as spreadsheets write
    w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
    w.writerow(COLUMNS)
    for r in rows:
      w.writerow([_text(r[c]) if r[c] is not None else None for c in COLUMNS])
  table = pa.table({'C2': pa.array([r['C2'] for r in rows], pa.int64()),   # another column order, typed
                    'I2': pa.array([r['I2'] for r in rows], pa.float64()),
                    'B1': pa.array([r['B1'] for r in rows], pa.int64()),
                    'C1': pa.array([r['C1'] for r in rows], pa.string()),
                    'I1': pa.array([r['I1'] for r in rows], pa.float64()),
                    'note': pa.array(['x'] * len(rows))})              # a column the model does not read
  pq.write_table(table, d / 'rows.parquet', row_group_size=64)
  # Vocabularies: the keys of the first 200 rows, so later rows also hit the OOV id.
  head = plain.read_bytes().split(b'\n', 1)[1]
  keys = parse_chunk(SPEC, delimited.Chunk(head, 2, ','), 'plain', BadInput()).keys[:200]
  vocab = tuple(np.unique(keys[:, j]) for j in range(keys.shape[1]))
  spec = features.InputSpec(SPEC, vocab)
  rng = np.random.default_rng(1)
  w_cat, w_dense = rng.normal(size=(len(vocab), 64)), rng.normal(size=2)

  def logits(batch):
    c = batch['cat'] % 64
    return (w_cat[np.arange(c.shape[1]), c].sum(1) + np.nan_to_num(batch['dense']) @ w_dense).astype(np.float32)
  return {'plain': str(plain), 'quoted': str(quoted), 'parquet': str(d / 'rows.parquet'),
          'scorer': Scorer(spec, logits, batch_size=64), 'dir': d}


def _scores(scorer, path, out, **kw):
  summary = predict.predict_file(scorer, path, str(out), progress=False, log=lambda *_: None, **kw)
  lines = open(out).read().splitlines()[1:]
  return summary, [float(l.split(',')[1]) for l in lines]


def test_parquet_and_quoted_csv_score_like_the_plain_csv(files):
  scorer, d = files['scorer'], files['dir']
  plain_summary, plain = _scores(scorer, files['plain'], d / 'plain_out.csv')
  assert plain_summary['scored'] == 300 and plain_summary['oov']   # later rows hold unseen keys
  assert len(set(plain)) > 50
  for name in ('quoted', 'parquet'):
    summary, got = _scores(scorer, files[name], d / f'{name}_out.csv')
    np.testing.assert_array_equal(got, plain)   # same parse, same ids: bit-identical
    assert summary['oov'] == plain_summary['oov'] and summary['rows'] == 300


def test_quoted_field_with_the_separator_is_one_field(files, tmp_path):
  scorer = files['scorer']
  path = tmp_path / 'comma.csv'
  path.write_text('I1,I2,B1,C1,C2\n1.5,2,7,"red, with a comma",3\n"",4,,"say ""hi""",5\n')
  summary, got = _scores(scorer, str(path), tmp_path / 'out.csv')
  assert summary['scored'] == 2 and summary['bad_total'] == 0
  want = scorer.score_rows([{'I1': 1.5, 'I2': 2, 'B1': 7, 'C1': 'red, with a comma', 'C2': 3},
                            {'I1': None, 'I2': 4, 'B1': None, 'C1': 'say "hi"', 'C2': 5}])
  np.testing.assert_allclose(got, want, rtol=1e-8, atol=0)   # predict.py writes 9 significant digits


def test_table_input_names_a_missing_column(files, tmp_path):
  path = tmp_path / 'lacks.parquet'
  pq.write_table(pa.table({'I1': [1.0], 'I2': [2.0], 'C1': ['a'], 'C2': [1]}), path)
  with pytest.raises(features.SchemaError, match=r"lacks the columns \['B1'\]"):
    predict.predict_file(files['scorer'], str(path), str(tmp_path / 'o.csv'), progress=False, log=lambda *_: None)


def test_headerless_quoted_tsv_scores_like_the_plain_tsv(files, tmp_path):
  """A headerless format (as Criteo's): the columns by position, with or without the label."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  scorer = files['scorer']
  spec = features.InputSpec(dataclasses.replace(SPEC, sep='\t', header=False), scorer.spec.vocab)
  tsv_scorer = Scorer(spec, scorer._logits_fn, batch_size=64)   # pylint: disable=protected-access
  rows = _rows(40, seed=5)
  plain, quoted = tmp_path / 'plain.tsv', tmp_path / 'quoted.tsv'
  plain.write_text(''.join('\t'.join(_text(r[c]) for c in COLUMNS[1:]) + '\n' for r in rows))   # no label
  quoted.write_text(''.join('\t'.join(f'"{_text(r[c])}"' if r[c] is not None else '' for c in COLUMNS[1:]) + '\n'
                            for r in rows))
  _, want = _scores(tsv_scorer, str(plain), tmp_path / 'a.csv')
  _, got = _scores(tsv_scorer, str(quoted), tmp_path / 'b.csv')
  assert len(want) == 40
  np.testing.assert_array_equal(got, want)
