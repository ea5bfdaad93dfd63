"""Seed-aggregated Markdown table of `quality_ablations.py` rows labelled '<row>_s<seed>'.

  python benchmarks/seed_table.py --workdir=/tmp/amz/qa5 [--rows=deres,dnn,...] [--baseline=dnn]

Reads WORKDIR/<row>_s<seed>/summary.json and prints, per row, the test AUC mean ± sample sd,
the per-seed values, GAUC and tail-item AUC (means over seeds, when the run reported them)
and logloss. Rows keep the order of --rows, else sorted.
"""
import argparse
import glob
import json
import math
import os
import re
import statistics


def collect(workdir):
  """{row: {seed: summary}} of every finished run under workdir."""
  rows = {}
  for path in glob.glob(os.path.join(workdir, '*', 'summary.json')):
    m = re.match(r'(.+)_s(\d+)$', os.path.basename(os.path.dirname(path)))
    if m:
      with open(path) as f:
        rows.setdefault(m.group(1), {})[int(m.group(2))] = json.load(f)
  return rows


def _mean(values):
  values = [v for v in values if v is not None and not math.isnan(v)]
  return f'{statistics.mean(values):.4f}' if values else '–'


def paired(runs, base_runs):
  """'+0.0012 [-0.0010, +0.0034] (n)': test AUC minus the baseline's over their common seeds,
  mean and 95% paired t interval ('' when fewer than 2 common seeds)."""
  from deres_jax.train import paper_table  # pylint: disable=g-import-not-at-top
  common = sorted(set(runs) & set(base_runs))
  if len(common) < 2:
    return ''
  mean, half = paper_table.paired_gain([runs[s]['test_auc'] for s in common],
                                       [base_runs[s]['test_auc'] for s in common])
  return f'{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}] ({len(common)})'


def markdown(rows, order=(), baseline=''):
  extra = f' vs {baseline}, paired [95% CI] (seeds) |' if baseline else ''
  lines = ['| row | seeds | test AUC (mean ± sd) | per seed | GAUC | tail-item AUC | logloss |' + extra,
           '|---|---|---|---|---|---|---|' + ('---|' if baseline else '')]
  for name in (order or sorted(rows)):
    runs = rows.get(name)
    if not runs:
      lines.append(f'| {name} | 0 | not run | | | | |' + (' |' if baseline else ''))
      continue
    seeds = sorted(runs)
    auc = [runs[s]['test_auc'] for s in seeds]
    sd = statistics.stdev(auc) if len(auc) > 1 else 0.0
    lines.append(f'| {name} | {len(seeds)} | {statistics.mean(auc):.4f} ± {sd:.4f} | '
                 + ' / '.join(f'{a:.4f}' for a in auc) + ' | '
                 + ' | '.join(_mean([runs[s].get(k) for s in seeds])
                              for k in ('test_gauc', 'test_tail_auc', 'test_logloss')) + ' |'
                 + (f' {paired(runs, rows.get(baseline, {})) if name != baseline else "—"} |'
                    if baseline else ''))
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--workdir', required=True)
  p.add_argument('--rows', default='', help='comma-separated row labels, in table order')
  p.add_argument('--baseline', default='', help='a row: add its paired AUC difference per row')
  a = p.parse_args()
  print(markdown(collect(a.workdir), [r for r in a.rows.split(',') if r], a.baseline))


if __name__ == '__main__':
  main()
