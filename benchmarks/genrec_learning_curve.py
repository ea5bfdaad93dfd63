"""Validation recall against training targets seen, for generative-retrieval runs side by side.

  python benchmarks/genrec_learning_curve.py --run TIGER=/work/runs/tiger --run SASRec=/work/runs/sasrec \
      [--metric=recall@10] [--out_svg=results/genrec_learning_curve_beauty.svg]

A next-item *target* is one prediction the loss is taken on: TIGER trains one target per
window (`train.batch_size` per step); SASRec trains every position of its causal windows, so its
targets per step are the logged `train/positions` (their mean over the run). Putting both on the
targets-seen axis shows whether a system is budget-limited (still rising at the end) or
model-limited (flat while the other keeps rising). Prints a markdown table (one row per
validation step and run) and writes the plot.
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


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--run', action='append', required=True, help='LABEL=WORKDIR (repeat)')
  p.add_argument('--metric', default='recall@10')
  p.add_argument('--out_svg', default='')
  args = p.parse_args()
  runs = {}
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
  for label, c in runs.items():
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
