"""The library's logistic regression against scikit-learn's one-hot one, on the same rows.

  python benchmarks/logreg_vs_sklearn.py --config=configs/quickstart.py --workdir=/tmp/lr_vs_sk

Both see the same features: one indicator per categorical id (OOV id 0 included) and, per
dense field, sign(x) log(1+|x|) plus a missing indicator. scikit-learn fits
LogisticRegression(C, lbfgs) to convergence on the training split; the library trains
`model.name=logreg` with the config's own optimiser settings (overridable with
--set key=value, keys as after --config.). Prints test AUC/logloss of both and the gap.
scikit-learn is a test/benchmark dependency only (pip install -e '.[test]').
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.quality_ablations import apply, load_config  # noqa: E402  pylint: disable=g-import-not-at-top


def one_hot(split, vocab_sizes):
  """Sparse design matrix [n, sum(vocab) + 2 * F_dense] of the logreg features."""
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  cols = []
  n = len(split['label'])
  if 'cat' in split and vocab_sizes:
    cat = split['cat'].astype(np.int64)
    cat = np.where((cat < 0) | (cat >= np.asarray(vocab_sizes)), 0, cat)
    offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]])
    rows = np.repeat(np.arange(n), cat.shape[1])
    cols.append(sparse.csr_matrix((np.ones(cat.size), (rows, (cat + offsets).ravel())),
                                  shape=(n, int(np.sum(vocab_sizes)))))
  if 'dense' in split and split['dense'].shape[1]:
    x = split['dense'].astype(np.float64)
    missing = np.isnan(x)
    x = np.where(missing, 0.0, x)
    cols.append(sparse.csr_matrix(np.concatenate([np.sign(x) * np.log1p(np.abs(x)), missing], 1)))
  return sparse.hstack(cols).tocsr()


def sklearn_logreg(ds, c_value, max_iter):
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.metrics import log_loss, roc_auc_score  # pylint: disable=g-import-not-at-top
  vocab = ds.schema.vocab_sizes
  x_train = one_hot(ds.splits['train'], vocab)
  x_test = one_hot(ds.splits['test'], vocab)
  from threadpoolctl import threadpool_limits  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  clf = LogisticRegression(C=c_value, max_iter=max_iter, solver='lbfgs')
  # One BLAS/OpenMP thread: idle-spinning pools would starve XLA's CPU collectives afterwards.
  with threadpool_limits(1):
    clf.fit(x_train, ds.splits['train']['label'])
  p = clf.predict_proba(x_test)[:, 1]
  y = ds.splits['test']['label']
  return {'test_auc': float(roc_auc_score(y, p)), 'test_logloss': float(log_loss(y, p)),
          'seconds': time.perf_counter() - t0}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--config', default='configs/quickstart.py')
  p.add_argument('--workdir', default='/tmp/lr_vs_sk')
  p.add_argument('--set', action='append', default=[], help='key=value override of the library run')
  p.add_argument('--C', type=float, default=1.0, help="scikit-learn's inverse L2 strength")
  p.add_argument('--max_iter', type=int, default=1000)
  a = p.parse_args()
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top

  config = apply(load_config(a.config), ['model.name=logreg'] + a.set)
  config.train.progress = False
  config.baseline.logreg = False
  ds = data_lib.load(config.data)
  sk = sklearn_logreg(ds, a.C, a.max_iter)
  print(f'scikit-learn LogisticRegression(C={a.C}): test AUC {sk["test_auc"]:.4f} '
        f'logloss {sk["test_logloss"]:.4f} ({sk["seconds"]:.0f} s)', flush=True)
  ours = trainer.train_and_evaluate(config, a.workdir, dataset=ds)
  print(f'deres_jax logreg ({" ".join(a.set) or "config as is"}): test AUC {ours["test_auc"]:.4f} '
        f'logloss {ours["test_logloss"]:.4f} ({ours["train_seconds"]:.0f} s, {ours["steps"]} steps)')
  print(f'gap (ours - sklearn): AUC {ours["test_auc"] - sk["test_auc"]:+.4f}')
  with open(os.path.join(a.workdir, 'comparison.json'), 'w') as f:
    json.dump({'sklearn': sk, 'ours': {k: ours[k] for k in ('test_auc', 'test_logloss', 'steps')},
               'overrides': a.set, 'C': a.C}, f, indent=2)


if __name__ == '__main__':
  main()
