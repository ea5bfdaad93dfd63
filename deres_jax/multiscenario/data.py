"""Multi-scenario data: a scenario column and K named labels per row.

A split is a dict of equal-length numpy columns (the CTR schema of `deres_jax/data/schema.py`
plus two multi-label columns):
  'labels':   float32 [N, K]   every label of the row, named by `label_names` (e.g. click, purchase)
  'label':    float32 [N]      the training target, `labels[:, label_names.index(target)]`
  'scenario': int32   [N]      scenario id in [0, S); S = a value never seen in training
  'dense', 'cat'               as in the CTR schema
  'probs':    float32 [N, K]   optional: true probabilities of every label (synthetic data)
  'prob':     float32 [N]      optional: true probability of the target

The CTR train step trains on 'label' only, so every CTR piece (iterator, train step,
checkpoints) carries over unchanged; 'labels' keeps the other targets for evaluation.
CTCVR (click AND purchase over impressions) is the label `purchase` where purchase implies
click (Ali-CCP, AliExpress, the synthetic data); CVR proper is P(purchase | click).
"""
import dataclasses

import numpy as np

from deres_jax.data.schema import Schema, check_split


@dataclasses.dataclass
class MultiScenarioData:
  schema: Schema               # field names, vocabularies, num_scenarios = S
  splits: dict                 # 'train' | 'val' | 'test' -> {column: np.ndarray}
  label_names: tuple           # K names, the columns of 'labels'
  target: str                  # the label trained on (copied to 'label')
  scenario_names: tuple = ()   # S names of the scenario ids, from the training rows
  source: str = ''
  notes: dict = dataclasses.field(default_factory=dict)  # bad rows skipped, unseen scenarios, ...


def set_target(labels, label_names, target: str):
  """The [N] training column for `target` ('ctcvr' = click * purchase when both exist)."""
  names = tuple(label_names)
  if target in names:
    return labels[:, names.index(target)].astype(np.float32)
  if target == 'ctcvr' and {'click', 'purchase'} <= set(names):
    return (labels[:, names.index('click')] * labels[:, names.index('purchase')]).astype(np.float32)
  raise ValueError(f'target {target!r} is not one of the labels {list(names)} of this dataset.')


def check(data: MultiScenarioData) -> MultiScenarioData:
  """Validates every split (CTR columns, [N, K] labels, scenario ids); returns `data`."""
  s, k = data.schema.num_scenarios, len(data.label_names)
  if s < 1:
    raise ValueError('multi-scenario data needs num_scenarios >= 1 in its schema.')
  for name, split in data.splits.items():
    n = check_split(data.schema, split, name)
    if split['labels'].shape != (n, k):
      raise ValueError(f"{name}: 'labels' has shape {split['labels'].shape}, expected ({n}, {k}).")
    sc = split['scenario']
    if sc.shape != (n,) or sc.min(initial=0) < 0 or sc.max(initial=0) > s:
      raise ValueError(f"{name}: 'scenario' must be [N] ids in [0, {s}] ({s} = unseen).")
  return data


def scenario_counts(split: dict, num_scenarios: int) -> np.ndarray:
  """Rows per scenario id, [S + 1]; the last entry counts unseen scenarios."""
  return np.bincount(split['scenario'], minlength=num_scenarios + 1)[:num_scenarios + 1]
