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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax.genrec import table  # pylint: disable=wrong-import-position


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='beauty')
  p.add_argument('--data_path', default=os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data',
                                                     'amazon'))
  args = p.parse_args()
  out = table.popularity(args.dataset, args.data_path, 0)   # every test user
  users = out['tail/users'] + out['head/users']
  print(json.dumps({'system': 'popularity', 'dataset': args.dataset, 'test_users': users,
                    'test': {k: round(float(v), 5) for k, v in out.items()}}))


if __name__ == '__main__':
  main()
