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
