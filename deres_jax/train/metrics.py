"""Exact evaluation metrics over a whole split (computed on the host in float64)."""
import numpy as np


def auc(labels, scores) -> float:
  """Exact ROC AUC (Mann-Whitney U with average ranks for tied scores).

  Args:
    labels: [N] array of 0/1.
    scores: [N] array of real scores (any monotone transform gives the same AUC).
  Returns:
    The probability that a random positive scores above a random negative (ties count 1/2).
  """
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  if labels.shape != scores.shape:
    raise ValueError(f'labels {labels.shape} and scores {scores.shape} differ in shape')
  n_pos = labels.sum()
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  order = np.argsort(scores, kind='mergesort')
  sorted_scores = scores[order]
  # Average rank (1-based) of each group of tied scores.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg_rank = first + (counts + 1) / 2.0
  ranks = np.empty_like(scores)
  ranks[order] = np.repeat(avg_rank, counts)
  return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logloss(labels, probs, eps: float = 1e-7) -> float:
  """Mean binary cross-entropy of probabilities clipped to [eps, 1 - eps]."""
  y = np.asarray(labels, np.float64).ravel()
  p = np.clip(np.asarray(probs, np.float64).ravel(), eps, 1 - eps)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def logloss_from_logits(labels, logits) -> float:
  """Mean binary cross-entropy computed stably from logits."""
  y = np.asarray(labels, np.float64).ravel()
  z = np.asarray(logits, np.float64).ravel()
  return float(np.mean(np.logaddexp(0.0, z) - y * z))


def gauc(labels, scores, groups) -> float:
  """Group AUC (DIN, Zhou et al. 2018): the impression-weighted mean of per-group AUC.

  GAUC = sum_u n_u AUC_u / sum_u n_u over the groups u (users) that have both a positive and a
  negative row; a group with one class only has no AUC and is skipped, as in the standard
  definition.

  Args:
    labels: [N] array of 0/1.
    scores: [N] real scores.
    groups: [N] group keys (e.g. user ids).
  Returns:
    The GAUC, or NaN when no group has both classes.
  """
  labels = np.asarray(labels, np.float64).ravel()
  scores = np.asarray(scores, np.float64).ravel()
  groups = np.asarray(groups).ravel()
  if not labels.shape == scores.shape == groups.shape:
    raise ValueError(f'labels {labels.shape}, scores {scores.shape} and groups {groups.shape} '
                     'differ in shape')
  order = np.argsort(groups, kind='mergesort')
  g, y, s = groups[order], labels[order], scores[order]
  starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
  ends = np.r_[starts[1:], len(g)]
  total, weight = 0.0, 0
  for a, b in zip(starts, ends):
    pos = y[a:b].sum()
    if 0 < pos < b - a:
      total += (b - a) * auc(y[a:b], s[a:b])
      weight += b - a
  return total / weight if weight else float('nan')


def tail_mask(train_ids, ids, fraction: float = 0.2):
  """Rows whose id is among the least frequent `fraction` of ids by training count.

  Ids are ranked by their count in `train_ids` (ids never seen in training count 0, so they
  are the rarest); the tail is the smallest set of least frequent ids that holds `fraction` of
  the distinct ids of train and `ids` together, ties broken by id.

  Args:
    train_ids: [N_train] ids of the training rows (e.g. the item field).
    ids: [N] ids of the evaluated rows.
    fraction: share of distinct ids that form the tail (0.2: the least frequent 20 %).
  Returns:
    bool [N]: True for rows whose id is in the tail.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f'tail fraction must lie in (0, 1), got {fraction}.')
  train_ids = np.asarray(train_ids).ravel()
  ids = np.asarray(ids).ravel()
  universe = np.union1d(np.unique(train_ids), np.unique(ids))
  counts = np.zeros(len(universe), np.int64)
  uniq, c = np.unique(train_ids, return_counts=True)
  counts[np.searchsorted(universe, uniq)] = c
  rank = np.lexsort((universe, counts))  # rarest first, ties by id
  tail = universe[rank[:int(round(fraction * len(universe)))]]
  return np.isin(ids, tail)


def relaimpr(auc_model: float, auc_base: float) -> float:
  """RelaImpr (Yan et al. 2014; DIN): ((AUC_model - 0.5) / (AUC_base - 0.5) - 1) x 100 %."""
  return ((auc_model - 0.5) / (auc_base - 0.5) - 1.0) * 100.0
