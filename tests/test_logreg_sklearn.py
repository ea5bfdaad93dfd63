"""The library's logistic regression reaches scikit-learn's one-hot optimum on the same rows.

Same features (an indicator per categorical id, log1p dense values and missing indicators),
same objective: scikit-learn minimises C * sum(logloss) + ||w||^2 / 2, which divided by C*N is
mean logloss + (1 / (C N)) / 2 * ||w||^2, i.e. `optim.embed_l2 = 1 / (C N)` with the BARS
'table' penalty (the intercept is not penalised in either). With a fixed budget of full-batch
Adam steps the two fits must agree within 0.002 test AUC.
"""
import os
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from deres_jax import data
from deres_jax.train import trainer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.logreg_vs_sklearn import sklearn_logreg  # noqa: E402  pylint: disable=g-import-not-at-top


def test_logreg_matches_sklearn_on_a_small_case(tiny_config, tmp_path):
  c = tiny_config
  c.data.update(num_train=4096, num_val=1024, num_test=2048, max_vocab=300)
  ds = data.load(c.data)
  n, big_c = len(ds.splits['train']['label']), 1.0
  sk = sklearn_logreg(ds, big_c, max_iter=2000)
  c.model = c.model.__class__({'name': 'logreg', 'dense_transform': 'log1p'})
  c.optim.update(name='adam', embed_name='adam', learning_rate=0.05, embed_learning_rate=0.05,
                 schedule='cosine', embed_l2=1.0 / (big_c * n), embed_l2_rows='table')
  c.train.update(batch_size=n, num_steps=400, log_every=100)   # full batch: plain minimisation
  c.eval.update(every_steps=400, restore_best=False)
  c.ckpt.every_steps = 0
  ours = trainer.train_and_evaluate(c, str(tmp_path / 'lr'), dataset=ds)
  assert abs(ours['test_auc'] - sk['test_auc']) < 0.002, (ours['test_auc'], sk['test_auc'])
  # And the check can fail: far from the optimum (a few steps) the AUCs differ.
  assert roc_auc_score(ds.splits['test']['label'], ds.splits['test']['prob']) > sk['test_auc'] - 0.2
  assert np.isfinite(ours['test_logloss'])
