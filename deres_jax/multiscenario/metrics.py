"""Per-scenario evaluation: AUC and logloss for every scenario and overall, and the
sample-weighted average AUC, wAUC = sum_s n_s AUC_s / sum_s n_s over the scenarios whose AUC
is defined (both classes present). Rows of scenarios never seen in training are counted
(`unseen_rows`) and included in the overall metrics only.
"""
import numpy as np

from deres_jax.train import metrics as ctr_metrics


def by_scenario(labels, logits, scenario, names) -> dict:
  """{'auc', 'logloss', 'wauc', 'unseen_rows', 'scenarios': {name: {...}}} of one split.

  Args:
    labels: [N] 0/1 targets.
    logits: [N] model logits (or any monotone score: AUC only; logloss reads them as logits).
    scenario: [N] ids in [0, S]; S = unseen.
    names: the S scenario names.
  """
  labels, logits = np.asarray(labels, np.float64), np.asarray(logits, np.float64)
  scenario = np.asarray(scenario)
  out = {'auc': ctr_metrics.auc(labels, logits),
         'logloss': ctr_metrics.logloss_from_logits(labels, logits),
         'unseen_rows': int((scenario >= len(names)).sum()), 'scenarios': {}}
  weighted, total = 0.0, 0
  for s, name in enumerate(names):
    rows = scenario == s
    n = int(rows.sum())
    auc = ctr_metrics.auc(labels[rows], logits[rows]) if n else float('nan')
    out['scenarios'][name] = {
        'rows': n, 'positives': int(labels[rows].sum()), 'auc': auc,
        'logloss': ctr_metrics.logloss_from_logits(labels[rows], logits[rows]) if n else float('nan')}
    if np.isfinite(auc):
      weighted, total = weighted + n * auc, total + n
  out['wauc'] = weighted / total if total else float('nan')
  return out


def flat(result: dict, prefix: str) -> dict:
  """One-level {prefix/auc, prefix/<scenario>/auc, ...} for metrics.jsonl."""
  out = {f'{prefix}/{k}': v for k, v in result.items() if k != 'scenarios'}
  for name, m in result['scenarios'].items():
    out.update({f'{prefix}/{name}/{k}': v for k, v in m.items() if k in ('auc', 'logloss')})
  return out
