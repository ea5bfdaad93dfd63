"""Model quality on two synthetic tasks with known oracles: how much of the LR -> oracle gap closes.

  python benchmarks/quality.py --workdir=/tmp/quality --out=results/quality_synthetic.md

Trains DeRes (the library default), PreNorm, OneTrans, DCNv2, DNN and logistic regression
with the quickstart recipe (configs/quickstart.py: 600k training rows, the same steps,
optimiser and seed for every model) on
  - 'synthetic': Criteo-schema data, factorisation-machine pairs and CP 3-/4-way terms;
  - 'synthetic_interest': multi-interest users (max over interests), dense x categorical
    slopes and a 3-way parity (deres_jax/data/synthetic_interest.py),
and prints test AUC / logloss, the oracle's, and gap closed = (AUC - AUC_LR) / (AUC_oracle -
AUC_LR). Each run is the library's own `train_and_evaluate` in WORKDIR/<task>/<model>; a finished
run (summary.json present) is read back, so an interrupted benchmark resumes.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.quality_ablations import apply, load_config  # noqa: E402  pylint: disable=g-import-not-at-top

TASKS = ('synthetic', 'synthetic_interest')
MODELS = {  # label -> overrides on the config's model section
    'deres': [],                                   # the config's DeRes (cross stem on)
    'deres_no_stem': ['model.embed_cross=0'],      # the paper's DeRes (no cross stem)
    'prenorm': ['model.connector=prenorm'],
    'onetrans': ['model.name=onetrans', 'model.connector=prenorm'],   # the paper's (zoo_connector aside)
    'dcnv2': ['model.name=dcnv2'],
    'dnn': ['model.name=dnn'],
    'logreg': ['model.name=logreg'],
}


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--config', default='configs/quickstart.py')
  p.add_argument('--workdir', default='/tmp/quality')
  p.add_argument('--tasks', default=','.join(TASKS))
  p.add_argument('--models', default=','.join(MODELS))
  p.add_argument('--set', action='append', default=[], help='key=value for every run')
  p.add_argument('--out', default='', help='also write the table (Markdown) here')
  a = p.parse_args()
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top

  lines = [f'# Quality on synthetic tasks (`{a.config}`' + (f', {" ".join(a.set)}' if a.set else '') + ')',
           '', f'Produced by `python benchmarks/quality.py --config={a.config} '
           + ''.join(f'--set {s} ' for s in a.set) + f'--out={a.out or "..."}`.', '']
  for task in a.tasks.split(','):
    rows, dataset = {}, None
    for label in a.models.split(','):
      workdir = os.path.join(a.workdir, task, label)
      done = os.path.join(workdir, 'summary.json')
      if os.path.exists(done):
        with open(done) as f:
          rows[label] = json.load(f)
        continue
      config = apply(load_config(a.config), [f'data.name={task}'] + MODELS[label] + a.set)
      config.train.progress, config.baseline.logreg = False, False
      if dataset is None:
        dataset = data_lib.load(config.data)
      t0 = time.perf_counter()
      rows[label] = trainer.train_and_evaluate(config, workdir, dataset=dataset)
      print(f'{task}/{label}: test AUC {rows[label]["test_auc"]:.4f} '
            f'({time.perf_counter() - t0:.0f} s)', flush=True)
    first = next(iter(rows.values()))
    oracle = first['oracle_auc']
    lr_auc = rows['logreg']['test_auc'] if 'logreg' in rows else None
    lines += [f'## {task}', '', '| model | test AUC | test logloss | gap closed | dense params | '
              'FLOPs/ex | train s |', '|---|---|---|---|---|---|---|']
    for label, s in rows.items():
      gap = ('' if lr_auc is None or oracle is None else
             f'{(s["test_auc"] - lr_auc) / (oracle - lr_auc):+.1%}')
      lines.append(f'| {label} | {s["test_auc"]:.4f} | {s["test_logloss"]:.4f} | {gap} | '
                   f'{s["dense_params"]:,} | {s["flops_per_example"]:,} | {s["train_seconds"]:.0f} |')
    lines += ['', f'Oracle: test AUC {oracle:.4f}, logloss {first["oracle_logloss"]:.4f}.', '']
  table = '\n'.join(lines)
  print(table)
  if a.out:
    with open(a.out + '.tmp', 'w') as f:  # atomic: a killed run never leaves half a table
      f.write(table + '\n')
    os.replace(a.out + '.tmp', a.out)


if __name__ == '__main__':
  main()
