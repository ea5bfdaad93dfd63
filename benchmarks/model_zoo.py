"""Every model of the zoo trained on one config: test AUC, parameters, FLOPs and step time.

  python benchmarks/model_zoo.py --config=configs/quickstart.py --workdir=/tmp/zoo \
      --out=results/model_zoo_quickstart.md

Each model is the config's model section switched to it (`models.switch`: shared fields such
as embed_dim, depth, width and tokenizer carry over, the rest take the model's defaults),
trained by the library's own `train_and_evaluate` in WORKDIR/<model>. A finished model is not
trained again (its summary.json is read), so an interrupted run resumes where it stopped.
"""
import argparse
import json
import os
import sys
import time
from deres_jax.config import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_config(path):
  return load_file(path)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--config', default='configs/quickstart.py')
  p.add_argument('--workdir', default='/tmp/model_zoo')
  p.add_argument('--models', default='all', help='comma-separated names, or all')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='also write the table (Markdown) to this file')
  a = p.parse_args()

  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top

  names = list(models.MODELS) if a.models == 'all' else a.models.split(',')
  base = load_config(a.config)
  base.seed = a.seed
  dataset = data_lib.load(base.data)
  rows = []
  for name in names:
    workdir = os.path.join(a.workdir, name)
    done = os.path.join(workdir, 'summary.json')
    if os.path.exists(done):
      with open(done) as f:
        summary = json.load(f)
    else:
      config = config_lib.apply_model_overrides(load_config(a.config), [('name', name)])
      config.seed, config.baseline.logreg, config.train.progress = a.seed, False, False
      t0 = time.perf_counter()
      summary = trainer.train_and_evaluate(config, workdir, dataset=dataset)
      print(f'{name}: test AUC {summary["test_auc"]:.4f} in {time.perf_counter() - t0:.0f} s',
            flush=True)
    steps = summary['steps']
    rows.append((name, summary['test_auc'], summary['test_logloss'], summary['embedding_params'],
                 summary['dense_params'], summary['flops_per_example'],
                 1000 * summary['train_seconds'] / max(steps, 1), summary.get('oracle_auc')))
  header = ('| model | test AUC | test logloss | embedding params | dense params | '
            'FLOPs/example (fwd) | ms/step |')
  lines = [header, '|---|---|---|---|---|---|---|']
  for name, auc, ll, emb, dense, fl, ms, _ in rows:
    lines.append(f'| {name} | {auc:.4f} | {ll:.4f} | {emb:,} | {dense:,} | {fl:,} | {ms:.1f} |')
  oracle = rows[0][-1] if rows else None
  table = '\n'.join(lines)
  print(table)
  if oracle is not None:
    print(f'oracle test AUC {oracle:.4f}')
  if a.out:
    cmd = ' '.join(['python', 'benchmarks/model_zoo.py'] + sys.argv[1:])
    text = (f'# Model zoo on `{a.config}` (seed {a.seed})\n\nProduced by `{cmd}` on '
            f'{os.cpu_count()} CPU cores; the budget is the config\'s own '
            f'({base.train.num_steps} steps of {base.train.batch_size}). ms/step is training '
            'time per step including input.\n\n' + table + '\n')
    if oracle is not None:
      text += f'\nOracle (true probabilities) test AUC: {oracle:.4f}.\n'
    tmp = a.out + '.tmp'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, a.out)


if __name__ == '__main__':
  main()
