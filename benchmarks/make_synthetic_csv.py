"""The synthetic Criteo-schema generator (deres_jax/data/synthetic.py) written as a CSV, so the
`configs/byo_csv.py` defaults can be checked on synthetic data of the held-out task's shape
(issue 26: 600k rows, 8 dense + 20 categorical fields):

  python benchmarks/make_synthetic_csv.py --rows=750000 --dense=8 --categorical=20 --out=/tmp/syn/syn.csv
  python launch/prepare_data.py csv --config=configs/byo_csv.py --data_dir=/tmp/syn/prep \\
      --config.data.csv_files=/tmp/syn/syn.csv --config.data.csv_dense=I1,...,I8 \\
      --config.data.csv_categorical=C1,...,C20

The columns are `label,I1..I<dense>,C1..C<categorical>` (the byo_csv example schema's names),
a missing value is an empty field. The label model uses all 13 dense and 26 categorical fields
of the generator; the file keeps the first `--dense` and `--categorical` of them, so part of the
signal is hidden, as in real logs. A last column `prob` (the true click probability) is written
with --prob, for an oracle AUC; leave it out of the schema.
"""
import argparse
import os

import numpy as np

from deres_jax.data import synthetic


def write_csv(out: str, rows: int, dense: int = 8, categorical: int = 20, seed: int = 0,
              prob: bool = False) -> float:
  """Writes the CSV atomically; returns the positive rate of its labels."""
  if not 0 <= dense <= synthetic.NUM_DENSE or not 1 <= categorical <= synthetic.NUM_CAT:
    raise ValueError(f'dense must be in 0..{synthetic.NUM_DENSE} and categorical in 1..{synthetic.NUM_CAT}, '
                     f'got {dense} and {categorical}')
  if rows < 10:
    raise ValueError(f'rows must be at least 10, got {rows}')
  _, splits = synthetic.generate(synthetic.SyntheticSpec(seed=seed, num_train=rows, num_val=1, num_test=1))
  s = splits['train']
  header = ['label'] + [f'I{k + 1}' for k in range(dense)] + [f'C{f + 1}' for f in range(categorical)]
  header += ['prob'] if prob else []
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + '.tmp'
  with open(tmp, 'w') as f:
    f.write(','.join(header) + '\n')
    for i in range(rows):
      d = ['' if np.isnan(x) else str(int(x)) for x in s['dense'][i, :dense]]
      c = ['' if v == 0 else str(int(v)) for v in s['cat'][i, :categorical]]
      f.write(','.join([str(int(s['label'][i]))] + d + c + ([f"{s['prob'][i]:.6f}"] if prob else [])) + '\n')
  os.replace(tmp, out)  # atomic: a killed run leaves no half-written CSV under the final name
  return float(s['label'].mean())


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--rows', type=int, default=750_000, help='rows in all (the CSV preparation splits 80/10/10)')
  p.add_argument('--dense', type=int, default=8, help=f'dense columns kept (at most {synthetic.NUM_DENSE})')
  p.add_argument('--categorical', type=int, default=20, help=f'categorical columns kept (at most {synthetic.NUM_CAT})')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--prob', action='store_true', help='also write the true probability as a last column')
  p.add_argument('--out', required=True)
  a = p.parse_args()
  try:
    rate = write_csv(a.out, a.rows, a.dense, a.categorical, a.seed, a.prob)
  except ValueError as e:
    p.error(str(e))
  print(f'wrote {a.rows} rows, {a.dense} dense + {a.categorical} categorical fields, '
        f'positive rate {rate:.3f}: {a.out}')


if __name__ == '__main__':
  main()
