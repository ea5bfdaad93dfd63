"""Controlled experiments behind docs/quality.md: one config, one change per row.

  python benchmarks/quality_ablations.py --config=configs/quickstart.py --workdir=/tmp/qa \
      --exp 'base:' --exp 'dcnv2:model.name=dcnv2' --exp 'w64:model.width=64'

Each --exp is 'label:key=value key=value ...' (keys as after --config. on train.py's command
line, model.name first when given), so every row is the train.py command
  python launch/train.py --config=CONFIG --config.key=value ...
Rows are trained by the library's own `train_and_evaluate` on one shared copy of the data in
WORKDIR/<label>; a finished row (summary.json present) is read back, not retrained, and only
if it was trained with the same config (a changed library default stops with the fields named).
Prints a Markdown table: test AUC / logloss, val AUC, params, steps and seconds.
"""
import argparse
import ast
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax.config import load_file  # noqa: E402  pylint: disable=g-import-not-at-top


def load_config(path):
  return load_file(path)


def apply(config, overrides):
  """Applies 'key=value' strings: model.* through the model switch, others by the field's type."""
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  pairs, rest = [], []
  for item in overrides:
    key, _, text = item.partition('=')
    if key.startswith('model.'):
      pairs.append((key[len('model.'):], text))
    else:
      rest.append((key, text))
  config = config_lib.apply_model_overrides(config, pairs)
  with config.unlocked():
    for key, text in rest:
      *parents, leaf = key.split('.')
      node = config
      for p in parents:
        node = node[p]
      old = node[leaf]
      if isinstance(old, str):
        value = text
      elif isinstance(old, bool):
        value = text.lower() in ('1', 'true', 'yes')
      else:
        value = ast.literal_eval(text)
        value = float(value) if isinstance(old, float) else value
      node[leaf] = value
  return config


def _changed_fields(workdir, config):
  """The fields in which WORKDIR/config.json differs from `config` (train/workdir.py's rules)."""
  from deres_jax.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return []  # no saved config (an older row): nothing to compare with
  return workdir_lib.config_changes(saved, json.loads(config.to_json_best_effort()))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--config', default='configs/quickstart.py')
  p.add_argument('--workdir', default='/tmp/quality_ablations')
  p.add_argument('--exp', action='append', default=[], help="'label:key=value ...' (repeat)")
  p.add_argument('--out', default='', help='append the table (Markdown) to this file')
  a = p.parse_args()

  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top

  exps = [(e.partition(':')[0], e.partition(':')[2].split()) for e in a.exp] or [('base', [])]
  datasets, rows = {}, []
  for label, overrides in exps:
    config = apply(load_config(a.config), overrides)
    config.train.progress = False
    workdir = os.path.join(a.workdir, label)
    done = os.path.join(workdir, 'summary.json')
    if os.path.exists(done):
      stale = _changed_fields(workdir, config)
      if stale:
        sys.exit(f'{workdir} was trained with a different config ({", ".join(stale[:6])} changed, '
                 'e.g. a library default): its result would not be this row. Use a new --workdir '
                 'or a new label.')
      with open(done) as f:
        summary = json.load(f)
    else:
      key = config.data.to_json()
      if key not in datasets:
        datasets[key] = data_lib.load(config.data)
      t0 = time.perf_counter()
      summary = trainer.train_and_evaluate(config, workdir, dataset=datasets[key])
      summary['wall_seconds'] = time.perf_counter() - t0
      with open(done, 'w') as f:
        json.dump(summary, f, indent=2)
    rows.append((label, ' '.join(f'--config.{o}' for o in overrides), summary))
    print(f'{label}: test AUC {summary["test_auc"]:.4f}', flush=True)

  lines = ['| row | overrides | test AUC | test logloss | val AUC | dense params | steps | train s |',
           '|---|---|---|---|---|---|---|---|']
  for label, cmd, s in rows:
    lines.append(f'| {label} | `{cmd or "(config as is)"}` | {s["test_auc"]:.4f} | '
                 f'{s["test_logloss"]:.4f} | {s["val_auc"]:.4f} | {s["dense_params"]:,} | '
                 f'{s["steps"]} | {s["train_seconds"]:.0f} |')
  oracle = rows[0][2].get('oracle_auc')
  table = '\n'.join(lines) + (f'\n\nOracle test AUC: {oracle:.4f}.\n' if oracle else '\n')
  print(table)
  if a.out:
    with open(a.out, 'a') as f:
      f.write(f'\n`python benchmarks/quality_ablations.py --config={a.config} '
              + ' '.join(f"--exp '{e}'" for e in a.exp) + '`\n\n' + table)


if __name__ == '__main__':
  main()
