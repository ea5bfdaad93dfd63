"""Multi-scenario data: a scenario column and K named labels per row.

A split is a dict of equal-length numpy columns (the CTR schema of `deres_jax/data/schema.py`
plus two multi-label columns):
  'labels':   float32 [N, K]   every label of the row, named by `label_names` (e.g. click, purchase)
  'label':    float32 [N]      the training target, `labels[:, label_names.index(target)]`
  'scenario': int32   [N]      scenario id in [0, S); S = a value never seen in training
  'dense', 'cat'               as in the CTR schema
  'seq':      int32   [N, F_seq, L]  optional behaviour histories, as in the CTR schema (-1 = padding)
  'probs':    float32 [N, K]   optional: true probabilities of every label (synthetic data)
  'prob':     float32 [N]      optional: true probability of the target

A dataset read from raw values (the CSV/Parquet formats of `samples.py`) keeps `vocab`, the raw
value of every categorical id (id = 1 + position; '' is a missing value, a category like any
other if training rows had it), and `raw_format`, how its files look; serving encodes new raw
rows with them (`vocab_keys`, serving/multiscenario_export.py). Dense values are not transformed
(the float of the text; empty or unparsable = NaN). The synthetic data's ids are its raw values:
no `vocab`.

The CTR train step trains on 'label' only, so every CTR piece (iterator, train step,
checkpoints) carries over unchanged; 'labels' keeps the other targets for evaluation.
CTCVR (click AND purchase over impressions) is the label `purchase` where purchase implies
click (Ali-CCP, AliExpress, the synthetic data); CVR proper is P(purchase | click).
"""
import dataclasses
import os

import numpy as np

from deres_jax.data.delimited import key_of_string
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
  vocab: dict = dataclasses.field(default_factory=dict)  # field -> raw values in id order ({} = ids are raw)
  raw_format: dict = dataclasses.field(default_factory=dict)  # the raw files' layout (samples.raw_format)
  seq_vocab: dict = dataclasses.field(default_factory=dict)  # list column with its own vocabulary -> int64 keys


def vocab_keys(vocab: dict) -> dict:
  """{field: int64 keys in id order} of `MultiScenarioData.vocab`: the CTR vocabularies' keys
  (`data/delimited.py key_of_string` of the UTF-8 text), so serving looks them up alike."""
  return {f: np.asarray([key_of_string(v.encode('utf-8')) for v in values], np.int64)
          for f, values in vocab.items()}


VOCAB_FILE = 'vocab.npz'  # the workdir's copy of the raw-value vocabularies (written by training)


def all_vocab_keys(data: 'MultiScenarioData') -> dict:
  """{field: int64 keys in id order} of the categorical fields (`vocab_keys`) and of the list
  columns with a vocabulary of their own (`seq_vocab`)."""
  return dict(vocab_keys(data.vocab), **{f: np.asarray(k, np.int64) for f, k in data.seq_vocab.items()})


def save_vocab(workdir: str, data: 'MultiScenarioData'):
  """Writes `workdir`/vocab.npz ({field: keys}, `all_vocab_keys`) atomically; nothing without a vocab."""
  if not data.vocab:
    return
  path = os.path.join(workdir, VOCAB_FILE)
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'wb') as f:
    np.savez(f, **all_vocab_keys(data))
  os.replace(tmp, path)


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


TASKS = ('ctr', 'cvr', 'ctcvr')
_CLICK, _CONVERT = ('click', 'is_click'), ('purchase', 'conversion', 'is_trade', 'buy')


def apply_task(data: MultiScenarioData, task: str) -> MultiScenarioData:
  """Sets the training target of every split by task ('' = keep `data.target`).

  'ctr'   = click over impressions;
  'ctcvr' = click AND conversion over impressions;
  'cvr'   = conversion over *clicked* rows: every split (train, validation, test) keeps its
            clicked rows only, as the CVR papers (ESMM, MI-DPG) train and evaluate.
  The synthetic oracle 'prob' follows (CVR: p(ctcvr) / p(click)).
  """
  if not task:
    return data
  if task not in TASKS:
    raise ValueError(f'data.task={task!r} is not one of {list(TASKS)} (or "" for data.target).')
  names = tuple(data.label_names)
  click = next((names.index(n) for n in _CLICK if n in names), None)
  conv = next((names.index(n) for n in _CONVERT if n in names), None)
  if click is None or (task != 'ctr' and conv is None):
    raise ValueError(f'data.task={task!r} needs a click label and a conversion label; this '
                     f'dataset has {list(names)}.')
  splits = {}
  for name, split in data.splits.items():
    if task == 'cvr':
      split = {k: v[split['labels'][:, click] > 0] for k, v in split.items()}
    labels = split['labels']
    # Only the task's column: with no conversion label (conv None) labels[:, None] would broadcast.
    col = (labels[:, click] if task == 'ctr' else labels[:, conv] if task == 'cvr' else
           labels[:, click] * labels[:, conv])
    split = dict(split, label=col.astype(np.float32))
    if 'probs' in split:  # the synthetic data: probs = (p_click, p_click * p_cvr)
      p = split['probs']
      split['prob'] = (p[:, click] if task == 'ctr' else p[:, conv] if task == 'ctcvr' else
                       p[:, conv] / np.maximum(p[:, click], 1e-12)).astype(np.float32)
    splits[name] = split
  notes = dict(data.notes, task=task, rows={k: len(v['label']) for k, v in splits.items()})
  return check(dataclasses.replace(data, splits=splits, target=task, notes=notes))


def route_to_shared(data: MultiScenarioData, fraction: float, seed: int = 0) -> MultiScenarioData:
  """Routes a seeded `fraction` of the training rows to the shared path (scenario id S).

  Every model gives an unseen scenario (id S) its scenario-shared parameters only; without
  training rows there, that path is never trained (a review measured logloss 0.332 -> 0.451
  for MI-DPG on relabelled test rows). A few percent of rows with the scenario hidden train it.
  """
  if not 0 <= fraction < 1:
    raise ValueError(f'data.shared_path_fraction={fraction} must be in [0, 1).')
  if fraction == 0:
    return data
  train = data.splits['train']
  hide = np.random.default_rng([seed, 32]).random(len(train['label'])) < fraction
  scen = np.where(hide, data.schema.num_scenarios, train['scenario']).astype(np.int32)
  splits = dict(data.splits, train=dict(train, scenario=scen))
  notes = dict(data.notes, shared_path_rows=int(hide.sum()))
  return check(dataclasses.replace(data, splits=splits, notes=notes))
