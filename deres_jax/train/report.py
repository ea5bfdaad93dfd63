"""The end-of-run report: a logistic-regression baseline on the same data and a summary table."""
import os

import ml_collections

from deres_jax import models
from deres_jax.train import metrics as metrics_lib
from deres_jax.train import trainer
from deres_jax.train import workdir as workdir_lib


def logreg_config(config) -> ml_collections.ConfigDict:
  """The same data, batch and steps as `config`, with the logistic-regression model."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.model = models.switch(c.model, 'logreg')
  c.optim.name = c.optim.embed_name = 'adam'
  c.optim.learning_rate = c.optim.embed_learning_rate = config.baseline.learning_rate
  c.optim.embed_l2 = 0.0
  c.optim.schedule, c.optim.warmup_steps = 'constant', 0
  if config.baseline.num_steps:
    c.train.num_steps = config.baseline.num_steps
  c.baseline.logreg = False
  return c


def add_logreg_baseline(config, workdir, summary, dataset=None) -> dict:
  """Trains the baseline in WORKDIR/logreg and adds logreg_* fields to the summary."""
  print('Training the logistic-regression baseline on the same data...', flush=True)
  base = trainer.train_and_evaluate(logreg_config(config), os.path.join(workdir, 'logreg'),
                                    dataset=dataset)
  summary = dict(summary, logreg_test_auc=base['test_auc'],
                 logreg_test_logloss=base['test_logloss'],
                 logreg_train_seconds=base['train_seconds'])
  if summary.get('test_auc') is not None:
    summary['auc_gain_over_logreg'] = summary['test_auc'] - base['test_auc']
    summary['relaimpr_over_logreg'] = metrics_lib.relaimpr(summary['test_auc'], base['test_auc'])
  workdir_lib.write_json_atomic(os.path.join(workdir, 'summary.json'), summary)
  return summary


def print_summary(summary: dict):
  """Prints the test metrics beside the oracle's and the baseline's as a table."""
  from rich.console import Console  # pylint: disable=g-import-not-at-top
  from rich.table import Table  # pylint: disable=g-import-not-at-top

  def fmt(v, digits=5):
    return '-' if v is None else f'{v:.{digits}f}'

  name = summary['model'] + (f" ({summary['connector']})" if summary.get('connector') else '')
  table = Table(title=f"Test split of {summary['dataset']}")
  table.add_column('model')
  table.add_column('AUC', justify='right')
  table.add_column('logloss', justify='right')
  table.add_row(name, fmt(summary['test_auc']), fmt(summary['test_logloss']))
  extra = [f"{label} {fmt(summary[k])}" for k, label in (('test_gauc', 'GAUC'),
                                                         ('test_tail_auc', 'tail-item AUC'))
           if summary.get(k) is not None]
  if 'logreg_test_auc' in summary:
    table.add_row('logistic regression', fmt(summary['logreg_test_auc']),
                  fmt(summary['logreg_test_logloss']))
  if summary.get('oracle_auc') is not None:
    table.add_row('oracle (true probabilities)', fmt(summary['oracle_auc']),
                  fmt(summary['oracle_logloss']))
  console = Console()
  console.print(table)
  if extra:
    console.print(', '.join(extra))
  eps = summary.get('examples_per_second')
  console.print(f"steps {summary['steps']} (best validation at {summary['best_step']}), "
                f"train {summary['train_seconds']:.1f} s, "
                f"{'-' if eps is None else f'{eps:,.0f}'} examples/s, "
                f"{summary['num_params']:,} parameters, {summary['devices']} device(s)")
