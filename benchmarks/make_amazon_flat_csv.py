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
"""
import argparse
import json
import os
import random


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument('--category', default='Beauty', help='Beauty | Sports_and_Outdoors | Toys_and_Games')
  p.add_argument('--users', type=int, default=6500, help='users sampled (6500: about 100k rows)')
  p.add_argument('--source', default='../shared/data/amazon/s3rec')
  p.add_argument('--out', default='/tmp/amz/Beauty.csv')
  p.add_argument('--seed', type=int, default=0)
  a = p.parse_args()
  rng = random.Random(a.seed)
  with open(os.path.join(a.source, f'{a.category}_item2attributes.json')) as f:
    attrs = json.load(f)
  with open(os.path.join(a.source, f'{a.category}.txt')) as f:
    seqs = [(line.split()[0], line.split()[1:]) for line in f if line.strip()]
  items = sorted({i for _, s in seqs for i in s})
  rng.shuffle(seqs)

  def attr(i, k):
    v = attrs.get(i, [])
    return str(v[k]) if -len(v) <= k < len(v) else ''

  rows = []
  for user, seq in seqs[:a.users]:
    seen = set(seq)
    for t in range(1, len(seq)):
      prev, prev2 = seq[t - 1], (seq[t - 2] if t >= 2 else '')
      for label in (1, 0):
        item = seq[t]
        while not label and item in seen:
          item = rng.choice(items)
        rows.append([label, user, item, attr(item, 0), attr(item, 1), attr(item, -1), prev,
                     attr(prev, -1), prev2])
  rng.shuffle(rows)
  os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
  tmp = a.out + '.tmp'
  with open(tmp, 'w') as f:
    f.write('label,user,item,a0,a1,alast,prev,prev_alast,prev2\n')
    f.writelines(','.join(map(str, r)) + '\n' for r in rows)
  os.replace(tmp, a.out)
  print(f'{len(rows):,} rows -> {a.out}')


if __name__ == '__main__':
  main()
