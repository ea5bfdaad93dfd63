"""Full-catalogue Recall@K and NDCG@K with one relevant item per user, split by head/tail.

With a single held-out item of 0-based rank r (the number of catalogue items scored strictly
above it; ties are broken in the target's favour),
  Recall@K = 1[r < K],   NDCG@K = 1[r < K] / log2(r + 2)
(the ideal DCG is 1), averaged over users. There is no negative sampling: every one of the
N items competes. A generative retriever returns a ranked list of K' items; a target absent
from it gets r = infinity. Tail items are the least popular `tail_fraction` (20%) of the
catalogue by training frequency (ties broken by item id); head items are the rest.
"""
import numpy as np

KS = (5, 10)


def ranks_from_scores(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
  """0-based rank of each target among items 1..N; scores [U, N+1] (column 0 = padding, ignored)."""
  scores = np.asarray(scores, np.float32)
  if scores.ndim != 2 or scores.shape[0] != len(target):
    raise ValueError(f'scores must be [users, items+1] with one row per target, got {scores.shape} '
                     f'for {len(target)} targets.')
  s = scores[:, 1:]
  t = s[np.arange(len(target)), np.asarray(target) - 1]
  return (s > t[:, None]).sum(1)


def drop_history(scores_or_items: np.ndarray, hist: np.ndarray, lists: bool) -> np.ndarray:
  """`eval.exclude_history`: the items of each user's history [U, L] (0 = padding) removed.

  Scores [U, N+1]: a history item's score becomes -inf (never ranked above the target unless
  the target is itself in the history). Ranked lists [U, K]: history items are dropped and the
  rest move up (the list gets shorter; 0 fills the end).
  """
  out = np.array(scores_or_items, copy=True)
  rows = np.arange(len(hist))[:, None]
  if not lists:
    out[rows, hist] = -np.inf
    out[:, 0] = -np.inf
    return out
  keep = ~(out[:, :, None] == np.where(hist > 0, hist, -1)[:, None, :]).any(2)
  order = np.argsort(~keep, axis=1, kind='stable')
  return np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(out, order, 1), 0)


def ranks_from_lists(items: np.ndarray, target: np.ndarray) -> np.ndarray:
  """0-based position of each target in its ranked list items [U, K'] (inf when absent)."""
  hit = np.asarray(items) == np.asarray(target)[:, None]
  return np.where(hit.any(1), hit.argmax(1), np.inf)


def tail_items(train_count: np.ndarray, tail_fraction: float = 0.2) -> np.ndarray:
  """Boolean [N+1] mask of the least popular `tail_fraction` of items 1..N by training count."""
  n = len(train_count) - 1
  order = np.lexsort((np.arange(1, n + 1), train_count[1:]))  # by count, then by id
  mask = np.zeros(n + 1, bool)
  mask[order[:int(round(tail_fraction * n))] + 1] = True
  return mask


def popularity_ranks(train_count: np.ndarray, target: np.ndarray) -> np.ndarray:
  """0-based ranks of the popularity baseline: items 1..N by training count, ties by lower id.

  The ranking is strict (no ties), so the target's rank is its position in that order.
  """
  n = len(train_count) - 1
  order = np.lexsort((np.arange(1, n + 1), -np.asarray(train_count[1:], np.int64))) + 1  # count desc, id asc
  position = np.empty(n + 1, np.int64)
  position[order] = np.arange(n)
  return position[np.asarray(target)]


def user_draw(num_users: int, limit: int, seed: int) -> np.ndarray:
  """Sorted rows of `limit` users drawn without replacement (all users when limit is 0 or larger)."""
  rows = np.arange(num_users)
  if limit and limit < num_users:
    rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
  return rows


def recall_ndcg(ranks: np.ndarray, ks=KS) -> dict:
  """{'recall@K', 'ndcg@K'} averaged over the given ranks (NaN when there are none)."""
  ranks = np.asarray(ranks, np.float64)
  out = {}
  for k in ks:
    hit = ranks < k
    out[f'recall@{k}'] = float(hit.mean()) if len(ranks) else float('nan')
    gain = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 0) + 2.0), 0.0)
    out[f'ndcg@{k}'] = float(gain.mean()) if len(ranks) else float('nan')
  return out


def evaluate(ranks: np.ndarray, target: np.ndarray, tail_mask: np.ndarray, ks=KS, slices=None) -> dict:
  """Overall metrics plus 'tail/...' and 'head/...' over the users whose target is tail / head, and
  '<name>/...' (with '<name>/users') for every item mask [N+1] in `slices` (tokenizer_stats.slices)."""
  is_tail = tail_mask[np.asarray(target)]
  out = recall_ndcg(ranks, ks)
  out.update({f'tail/{k}': v for k, v in recall_ndcg(ranks[is_tail], ks).items()})
  out.update({f'head/{k}': v for k, v in recall_ndcg(ranks[~is_tail], ks).items()})
  out['tail/users'], out['head/users'] = int(is_tail.sum()), int((~is_tail).sum())
  for name, mask in (slices or {}).items():
    hit = mask[np.asarray(target)]
    out.update({f'{name}/{k}': v for k, v in recall_ndcg(ranks[hit], ks).items()})
    out[f'{name}/users'] = int(hit.sum())
  return out
