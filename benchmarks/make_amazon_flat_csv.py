"""A flat (history-free) CTR CSV from Amazon 5-core data: the backbone diagnosis of docs/quality.md.

  python benchmarks/make_amazon_flat_csv.py --category=Beauty --users=6500 --out=/tmp/amz/Beauty.csv
  python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
  python benchmarks/quality_ablations.py --config=configs/amazon_flat.py --workdir=/tmp/amz/qa \\
      --exp 'deres:' --exp 'dnn:model.name=dnn'

Eight categorical fields and no dense one, the shape of the held-out real task of issue 26:
user, item, the item's first two and last attribute ids (S3-Rec's category path and brand),
the previous item, its last attribute, and the item before it. Every interaction after a
user's first is a positive; each gets one negative, an item drawn uniformly from those the
user never interacted with, with the same user-side fields. Rows are shuffled; the library's
CSV preparation splits them 80/10/10 at random. The issue-27 benchmark with histories and the
leave-last-out protocol is `launch/prepare_data.py amazon` (docs/data.md).

With --categories, one multi-scenario CSV (docs/multiscenario.md, configs/multiscenario/amazon.py):
the same rows for a fraction of each category's users, a `domain` column (the category), the
label named `click`, and every id prefixed by its category so ids of two categories never collide:

  python benchmarks/make_amazon_flat_csv.py --categories=Beauty,Sports_and_Outdoors,Toys_and_Games \\
      --user_fraction=0.17 --out=/tmp/amz/ms.csv
"""
import argparse
import json
import os
import random

# The flat CSV's columns after the label (and, with --categories, the scenario column `domain`).
FIELDS = ('user', 'item', 'a0', 'a1', 'alast', 'prev', 'prev_alast', 'prev2')


def read_category(source: str, category: str):
  """(user sequences [(user, [item, ...])], item -> attribute ids) of one S3-Rec category file."""
  with open(os.path.join(source, f'{category}_item2attributes.json')) as f:
    attrs = json.load(f)
  with open(os.path.join(source, f'{category}.txt')) as f:
    seqs = [(line.split()[0], line.split()[1:]) for line in f if line.strip()]
  return seqs, attrs


def category_rows(seqs, attrs, users: int, rng: random.Random, prefix: str = '') -> list:
  """[label, *FIELDS] rows of `users` users drawn from `seqs` (shuffled in place by `rng`).

  Every id (user, item, attribute) is written as `prefix` + id: categories number their users,
  items and attributes from 1 each, so a per-category prefix keeps them from colliding.
  """
  items = sorted({i for _, s in seqs for i in s})
  rng.shuffle(seqs)

  def attr(i, k):
    v = attrs.get(i, [])
    return prefix + str(v[k]) if -len(v) <= k < len(v) else ''

  def pid(i):
    return prefix + i if i else ''

  rows = []
  for user, seq in seqs[:users]:
    seen = set(seq)
    for t in range(1, len(seq)):
      prev, prev2 = seq[t - 1], (seq[t - 2] if t >= 2 else '')
      for label in (1, 0):
        item = seq[t]
        while not label and item in seen:
          item = rng.choice(items)
        rows.append([label, pid(user), pid(item), attr(item, 0), attr(item, 1), attr(item, -1), pid(prev),
                     attr(prev, -1), pid(prev2)])
  return rows


def multi_category_rows(source: str, categories, user_fraction: float, seed: int = 0) -> list:
  """[click, domain, *FIELDS] rows: `user_fraction` of each category's users (so the categories keep
  their natural sizes), ids prefixed '<category initial(s)>:', shuffled."""
  rows = []
  for category in categories:
    seqs, attrs = read_category(source, category)
    rng = random.Random(f'{seed}:{category}')
    prefix = ''.join(w[0] for w in category.split('_and_')) + ':'   # Beauty B:, Sports_and_Outdoors SO:
    users = max(1, round(user_fraction * len(seqs)))
    rows += [[r[0], category] + r[1:] for r in category_rows(seqs, attrs, users, rng, prefix)]
  random.Random(seed).shuffle(rows)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--category', default='Beauty', help='Beauty | Sports_and_Outdoors | Toys_and_Games')
  p.add_argument('--categories', default='', help='comma-separated categories: one multi-scenario CSV with a '
                 '`domain` column and a `click` label (replaces --category and --users)')
  p.add_argument('--user_fraction', type=float, default=0.17,
                 help='--categories: fraction of each category\'s users sampled (0.17: about 200k rows)')
  p.add_argument('--users', type=int, default=6500, help='users sampled (6500: about 100k rows)')
  p.add_argument('--source', default='../shared/data/amazon/s3rec')
  p.add_argument('--out', default='/tmp/amz/Beauty.csv')
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args()
  if a.categories:
    rows = multi_category_rows(a.source, [c.strip() for c in a.categories.split(',') if c.strip()],
                               a.user_fraction, a.seed)
    header = 'click,domain,' + ','.join(FIELDS)
  else:
    rng = random.Random(a.seed)
    seqs, attrs = read_category(a.source, a.category)
    rows = category_rows(seqs, attrs, a.users, rng)
    rng.shuffle(rows)
    header = 'label,' + ','.join(FIELDS)
  os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
  tmp = a.out + '.tmp'
  with open(tmp, 'w') as f:
    f.write(header + '\n')
    f.writelines(','.join(map(str, r)) + '\n' for r in rows)
  os.replace(tmp, a.out)
  print(f'{len(rows):,} rows -> {a.out}')


if __name__ == '__main__':
  main()
