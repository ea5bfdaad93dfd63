"""Validation recall against training targets seen, for generative-retrieval runs side by side.

  python benchmarks/genrec_learning_curve.py --run TIGER=/work/runs/tiger --run SASRec=/work/runs/sasrec \
      [--metric=recall@10] [--out_svg=results/genrec_learning_curve_beauty.svg]

A next-item *target* is one prediction the loss is taken on: TIGER trains one target per
window (`train.batch_size` per step); SASRec trains every position of its causal windows, so its
targets per step are the logged `train/positions` (their mean over the run). Putting both on the
targets-seen axis shows whether a system is budget-limited (still rising at the end) or
model-limited (flat while the other keeps rising). Prints a markdown table (one row per
validation step and run), the test table of the runs that finished (their summary.json) and
writes the plot.

`--keep=FILE` reads the runs of an earlier output of this script back (curve rows, test row and
footer), so a run can be added to a committed curve after the other runs' workdirs are gone; a
label also given with `--run` is taken from its workdir instead:

  python benchmarks/genrec_learning_curve.py --keep=results/genrec_learning_curve_toys.md \
      --run "TIGER (RQ-KMeans IDs)=/work/runs/platform_toys/tiger_rqkmeans/seed0" \
      --out_svg=results/genrec_learning_curve_toys.svg
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax import plotting  # pylint: disable=wrong-import-position


def curve(workdir: str, metric: str) -> dict:
  """{'targets': [..], 'value': [..], 'ndcg': [..], 'steps': [..], 'per_step': x} of one run."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  m = plotting.read_metrics(workdir)
  if 'eval/' + metric not in m:
    raise SystemExit(f'{workdir}: no eval/{metric} logged yet')
  if config.get('system') == 'sasrec':
    per_step = float(np.mean(m['train/positions'][1])) if 'train/positions' in m else float('nan')
  else:
    per_step = float(config['train']['batch_size'])
  steps, values = m['eval/' + metric]
  ndcg_key = 'eval/' + metric.replace('recall', 'ndcg')
  ndcg = dict(zip(*m[ndcg_key])) if ndcg_key in m else {}
  seen = {}
  for s, v in zip(steps, values):   # a resumed run may log a step twice: keep the last
    seen[s] = v
  steps = sorted(seen)
  return {'steps': steps, 'value': [seen[s] for s in steps], 'ndcg': [ndcg.get(s, float('nan')) for s in steps],
          'targets': [s * per_step for s in steps], 'per_step': per_step,
          'val_users': config.get('eval', {}).get('num_val_users', 0)}


def read_back(path: str) -> dict:
  """{label: {'curve': curve dict, 'test': test-table line or None, 'foot': footer line}} of an
  earlier output of this script (its markdown as printed)."""
  if not os.path.isfile(path):
    raise SystemExit(f'--keep={path}: no such file')
  kept = {}
  with open(path) as f:
    lines = [line.rstrip('\n') for line in f]
  for line in lines:
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if not line.startswith('| ') or cells[0] == 'run':
      continue
    if len(cells) == 5:   # a curve row: run, step, targets seen (M), value, ndcg
      c = kept.setdefault(cells[0], {'curve': None, 'test': None, 'foot': ''})
      c['curve'] = c['curve'] or {'steps': [], 'value': [], 'ndcg': [], 'targets': [], 'per_step': float('nan'),
                                  'val_users': 0}
      c['curve']['steps'].append(int(cells[1]))
      c['curve']['targets'].append(float(cells[2]) * 1e6)
      c['curve']['value'].append(float(cells[3]))
      c['curve']['ndcg'].append(float(cells[4]))
    elif cells[0] in kept:   # the test-table row
      kept[cells[0]]['test'] = line
  for line in lines:
    label, sep, rest = line.partition(': ')
    if sep and label in kept and 'targets per step' in rest:
      kept[label]['foot'] = line
      kept[label]['curve']['per_step'] = float(rest.split()[0])
  if not kept:
    raise SystemExit(f'--keep={path}: no curve rows found (is it an output of this script?)')
  return kept


def test_table(run_args, kept_lines=None):
  """The test metrics of each finished run (WORKDIR/summary.json), one markdown row per run;
  `kept_lines` are rows read back by `read_back` (printed first)."""
  cols = ['recall@5', 'ndcg@5', 'recall@10', 'ndcg@10', 'tail/recall@10', 'head/recall@10']
  print('\n| run | ' + ' | '.join(c.replace('recall', 'R').replace('ndcg', 'N') for c in cols)
        + ' | decode ms/user (median) | train s | best step | test users |')
  print('|---|' + '---:|' * (len(cols) + 4))
  for line in kept_lines or ():
    print(line)
  for item in run_args:
    label, _, workdir = item.partition('=')
    path = os.path.join(workdir, 'summary.json')
    if not os.path.isfile(path):
      print(f'| {label} | ' + ' | '.join(['(running)'] * (len(cols) + 4)) + ' |')
      continue
    with open(path) as f:
      s = json.load(f)
    t = s.get('test', {})
    dec = s.get('decode_ms_per_user', {}).get('median')
    train_s = s.get('train_seconds')
    users = int(s.get('test_users') or t.get('tail/users', 0) + t.get('head/users', 0))
    print(f'| {label} | ' + ' | '.join(f'{t[c]:.4f}' if c in t else '–' for c in cols)
          + f" | {f'{dec:.1f}' if dec else 'n/a'} | {f'{train_s:.0f}' if train_s else '–'} | "
          f"{s.get('best_step', '–')} | {users:,} |")


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--run', action='append', default=[], help='LABEL=WORKDIR (repeat)')
  p.add_argument('--keep', default='', help='an earlier output of this script whose runs are read back')
  p.add_argument('--metric', default='recall@10')
  p.add_argument('--out_svg', default='')
  args = p.parse_args()
  if not args.run and not args.keep:
    raise SystemExit('give at least one --run LABEL=WORKDIR (or --keep=FILE)')
  labels = {item.partition('=')[0] for item in args.run}
  kept = {k: v for k, v in (read_back(args.keep) if args.keep else {}).items() if k not in labels}
  runs = {k: v['curve'] for k, v in kept.items()}
  for item in args.run:
    label, sep, workdir = item.partition('=')
    if not sep:
      raise SystemExit(f'--run takes LABEL=WORKDIR, got {item!r}')
    runs[label] = curve(workdir, args.metric)
  ndcg = args.metric.replace('recall', 'NDCG')
  print(f'| run | step | targets seen (M) | validation {args.metric} | validation {ndcg} |')
  print('|---|---:|---:|---:|---:|')
  for label, c in runs.items():
    for s, t, v, n in zip(c['steps'], c['targets'], c['value'], c['ndcg']):
      print(f'| {label} | {s} | {t / 1e6:.2f} | {v:.4f} | {n:.4f} |')
  test_table(args.run, [v['test'] for v in kept.values() if v['test']])
  for label, c in runs.items():
    if label in kept:
      print(kept[label]['foot'] or f'{label}: (read back from {args.keep})')
      continue
    users = 'all' if not c['val_users'] else f"{c['val_users']:,} sampled"
    print(f'{label}: {c["per_step"]:.1f} targets per step; validation users: {users}')
  if args.out_svg:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in runs.items():
      ax.plot(np.asarray(c['targets']) / 1e6, c['value'], marker='o', label=label)
    ax.set_xlabel('training targets seen (millions)')
    ax.set_ylabel(f'validation {args.metric}')
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plotting.save(fig, args.out_svg)
    print(f'wrote {args.out_svg}')


if __name__ == '__main__':
  main()
