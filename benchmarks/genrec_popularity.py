"""The popularity baseline of the genrec tables: items ranked by training count, same split.

  python benchmarks/genrec_popularity.py [--dataset=beauty] [--data_path=../shared/data/amazon]

Leave-one-out test targets of every user (genrec/data.py), the full catalogue ranked by each
item's count in the training parts (ties: lower id first), Recall/NDCG@5/10 overall, on tail
items (the least popular 20 % by training count) and on head items, as the trained systems'
`summary.json` reports them (genrec/metrics.py). Prints one JSON line.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax.genrec import data as data_lib  # pylint: disable=wrong-import-position
from deres_jax.genrec import metrics  # pylint: disable=wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='beauty')
  p.add_argument('--data_path', default=os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data',
                                                     'amazon'))
  args = p.parse_args()
  data = data_lib.load(args.data_path, args.dataset)
  # Stable order: by count descending, then id ascending; column 0 (padding) never ranked.
  n = len(data.train_count)   # integer keys below 2**24: exact in the float32 ranking
  scores = (data.train_count.astype(np.int64) * (n + 1) + (n - np.arange(n))).astype(np.float64)
  if scores.max() >= 2 ** 24:
    raise SystemExit('catalogue too large for exact float32 tie-breaking; rank in chunks instead')
  scores[0] = -1
  ranks = metrics.ranks_from_scores(np.broadcast_to(scores, (len(data.test_target), len(scores))),
                                    data.test_target)
  tail = metrics.tail_items(data.train_count)
  out = metrics.evaluate(ranks, data.test_target, tail)
  print(json.dumps({'system': 'popularity', 'dataset': args.dataset, 'test_users': int(len(ranks)),
                    'test': {k: round(float(v), 5) for k, v in out.items()}}))


if __name__ == '__main__':
  main()
