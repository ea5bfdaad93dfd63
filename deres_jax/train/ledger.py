"""A run ledger: finished runs of a long table kept beside its results, so it resumes anywhere.

A table at convergence takes CPU hours, more than one working session, and a workdir does not
always survive until the next one (a fresh machine, a cleaned /tmp). The ledger is a small
JSON-lines file committed next to the table (`results/<table>.runs.jsonl`): one line per
finished run with its job name, a fingerprint of the config that trained it, the wall seconds
and its summary.json. `jobs.run(..., ledger=PATH)`

  * restores a run found in the ledger into WORKDIR/<name>/summary.json instead of training it
    again, when the fingerprint matches (same config, up to `IGNORED` fields that do not change
    what a run computes); a mismatch retrains, and the progress line says why;
  * records every run it trains (the whole file rewritten atomically, lines sorted by name, so
    a git diff shows only the runs added). A record re-reads the file under an exclusive lock
    (`<ledger>.lock`) and merges, so two processes sharing a ledger (e.g. `--rows` split over
    two cores) never drop each other's runs.

A run no entry of this ledger has is also looked up by fingerprint alone in the other ledgers
of the same directory (`siblings`): the fingerprint covers every field that changes what a run
computes, seed included, so a row two tables share (the ablation table's DeRes and mHC rows are
the main table's, at the same preset) is trained once; the borrowed entry is then recorded in
this ledger under this job's name, so each ledger stays complete on its own.

Only summaries travel: checkpoints stay in the workdir (what needs weights, e.g. a latency
pass, reads them there and says when they are absent).
"""
import contextlib
import fcntl
import hashlib
import itertools
import json
import os

from deres_jax.train import workdir as workdir_lib

# Dotted prefixes of config fields that never change what a finished run computes.
IGNORED = ('train.log_every', 'train.progress', 'train.transfer_guard', 'ckpt.every_steps',
           'ckpt.max_to_keep')


def _hash(flat: dict) -> str:
  return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(config) -> list:
  """Every fingerprint a run of `config` may have been recorded with, the current one first.

  `config` is a ConfigDict or the dict of a run's config.json. The fingerprint is a short hash
  of the fields outside `IGNORED` (sorted JSON), where a field added since runs were recorded
  (workdir.ADDED_FIELDS) counts only when it differs from the value that reproduces those runs.
  Entries written while such a field was hashed even at that value are matched too (the other
  fingerprints: every subset of those fields kept), so no finished run is trained again.
  """
  tree = config if isinstance(config, dict) else json.loads(config.to_json_best_effort())
  flat = {k: v for k, v in workdir_lib._flatten(tree).items()  # pylint: disable=protected-access
          if not k.startswith(IGNORED)}
  neutral = sorted(set(flat) - set(workdir_lib.drop_added_defaults(flat)))
  base = {k: v for k, v in flat.items() if k not in neutral}
  return [_hash({**base, **{k: flat[k] for k in keep}})
          for r in range(len(neutral) + 1) for keep in itertools.combinations(neutral, r)]


def fingerprint(config) -> str:
  """The fingerprint a run of `config` is recorded with now (`fingerprints`)."""
  return fingerprints(config)[0]


def load(path: str) -> dict:
  """name -> entry of the ledger at `path` ({} when it does not exist).

  Raises ValueError naming the line when a line is not a JSON object with name, fingerprint
  and summary (a hand-edited or merge-conflicted ledger must not silently drop runs).
  """
  if not path or not os.path.exists(path):
    return {}
  entries = {}
  with open(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        e = json.loads(line)
        if not isinstance(e, dict) or not {'name', 'fingerprint', 'summary'} <= set(e):
          raise ValueError('needs name, fingerprint and summary')
      except ValueError as err:
        raise ValueError(f'run ledger {path}, line {i}: not a ledger entry ({err}); fix or '
                         'delete that line (its run is then trained again).') from None
      entries[e['name']] = e
  return entries


def lookup(entries: dict, name: str, config, siblings: dict | None = None):
  """(entry or None, note): the entry of job `name` if its config matches, else a sibling
  ledger's entry with the same fingerprint (the note then names that ledger), else why not."""
  e, fps = entries.get(name), fingerprints(config)
  if e is not None and e['fingerprint'] in fps:
    return e, ''
  for fp in fps if siblings else ():
    if fp in siblings:
      source, borrowed = siblings[fp]
      return dict(borrowed, name=name), f'same config as {borrowed["name"]} in {source}'
  return None, ('its ledger entry was trained with another config' if e is not None else '')


def siblings(path: str) -> dict:
  """fingerprint -> (file name, entry) over the other *.runs.jsonl files beside `path` (a ledger
  that does not parse is skipped: it is that table's to fix, not this one's)."""
  folder = os.path.dirname(os.path.abspath(path))
  pool = {}
  if not os.path.isdir(folder):
    return pool
  for name in sorted(os.listdir(folder)):
    other = os.path.join(folder, name)
    if not name.endswith('.runs.jsonl') or os.path.abspath(other) == os.path.abspath(path):
      continue
    try:
      for e in load(other).values():
        pool.setdefault(e['fingerprint'], (name, e))
    except (OSError, ValueError):
      continue
  return pool


def record(path: str, entries: dict, name: str, config, summary: dict, seconds: float | None):
  """Adds (or replaces) the entry of job `name` and rewrites the ledger atomically.

  Entries another process recorded since `entries` was loaded are merged in (and copied into
  `entries`) first, under an exclusive lock, so concurrent writers never lose a run.
  """
  entry = {'name': name, 'fingerprint': fingerprint(config),
           'seconds': None if seconds is None else round(float(seconds), 1), 'summary': summary}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with _locked(path):
    for k, e in load(path).items():
      entries.setdefault(k, e)
    entries[name] = entry
    text = ''.join(json.dumps(entries[k], sort_keys=True, default=float) + '\n' for k in sorted(entries))
    workdir_lib.write_text_atomic(path, text)


@contextlib.contextmanager
def _locked(path: str):
  """An exclusive advisory lock on `path`.lock for the duration of the block."""
  with open(path + '.lock', 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def beside(out: str) -> str:
  """The default ledger of a results file: results/x.md -> results/x.runs.jsonl."""
  return os.path.splitext(out)[0] + '.runs.jsonl'
