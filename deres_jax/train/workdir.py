"""One run per workdir (a lock file) and no silent config drift on resume.

Lock: `WORKDIR/.lock.<process index>` holds the pid and host of the process training there,
created with O_CREAT | O_EXCL (atomic). A second run on the same workdir stops at once with
`WorkdirBusyError`; a lock left by a dead process (same host, pid gone) is taken over.

Config drift: a resumed run compares its config with `WORKDIR/config.json` (written by the
run that made the checkpoints). Fields that change the model, the data or the optimisation
would make the checkpoints unusable or silently mix two experiments, so a difference stops
the run with one sentence naming the fields. The fields in `MAY_CHANGE` (run length,
logging, evaluation cadence, checkpoint cadence, the data path) may differ;
`allow_config_change=True` (`launch/train.py --allow_config_change`) accepts any change.
"""
import contextlib
import json
import os
import socket

from deres_jax.config import ConfigError

# Prefixes of config fields that a resumed run may change (docs/reliability.md). zoo_tokenizer and
# zoo_connector act only while the config is built (a --config.model.name switch copies them into
# the model section, which is compared): they never change what a built config trains.
MAY_CHANGE = ('train.num_steps', 'train.num_epochs', 'train.log_every', 'train.progress',
              'train.transfer_guard', 'eval.', 'ckpt.every_steps', 'ckpt.max_to_keep',
              'baseline.', 'data.path', 'zoo_tokenizer', 'zoo_connector')


class WorkdirBusyError(RuntimeError):
  """Another live process is training in this workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def lock(workdir: str, process_index: int = 0):
  """Holds WORKDIR/.lock.<process_index> for the duration of a run."""
  path = os.path.join(workdir, f'.lock.{process_index}')
  me = {'pid': os.getpid(), 'host': socket.gethostname()}
  for _ in range(3):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          held = json.load(f)
      except (OSError, ValueError):
        held = {}  # half-written by a process killed at once: stale
      live = (held.get('pid') and held.get('host') == me['host'] and held['pid'] != me['pid']
              and _alive(int(held['pid'])))
      other_host = held.get('host') not in (None, me['host'])
      if live or other_host:
        raise WorkdirBusyError(
            f'the workdir {workdir!r} is in use by process {held.get("pid")} on '
            f'{held.get("host")} (lock file {path}); wait for it to finish or use another '
            '--workdir. Delete the lock file only if that process is gone.') from None
      with contextlib.suppress(FileNotFoundError):
        os.remove(path)  # stale: its process is dead
      continue
    with os.fdopen(fd, 'w') as f:
      json.dump(me, f)
    break
  else:
    raise WorkdirBusyError(f'could not take the lock file {path}.')
  try:
    yield path
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


# Fields added to the config after runs were recorded, with the value that makes a run compute
# exactly what it computed before the field existed. A config holding that value compares equal
# to (and has the run ledger's fingerprint of) one that lacks the field, so adding a field never
# invalidates a finished run in a ledger or a resume from an older workdir. A new field whose
# default keeps the old behaviour goes here; test_ledger checks every entry is such a default.
ADDED_FIELDS = {
    'zoo_connector': '',          # session 9: the connector a --config.model.name switch takes
    'model.mix_scale': 'none',    # session 10: RankMixer's LayerScale on token mixing
    'optim.embed_l2_prior': 0.0,  # session 12: the embedding L2 from the data size
}


def drop_added_defaults(flat: dict) -> dict:
  """`flat` (a flattened config) without the ADDED_FIELDS that hold their neutral value."""
  return {k: v for k, v in flat.items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def config_changes(saved: dict, now: dict) -> list:
  """Names of the fields (dotted) that differ between two config dicts, outside MAY_CHANGE."""
  a, b = drop_added_defaults(_flatten(saved)), drop_added_defaults(_flatten(now))
  return sorted(k for k in set(a) | set(b)
                if a.get(k, '<absent>') != b.get(k, '<absent>') and not k.startswith(MAY_CHANGE))


def check_config(workdir: str, config, allow_change: bool = False):
  """Raises ConfigError when a run resuming in `workdir` has a different config."""
  path = os.path.join(workdir, 'config.json')
  if allow_change or not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError):
    return  # unreadable: nothing to compare with (the checkpoints' own restore decides)
  now = json.loads(config.to_json_best_effort())
  changed = config_changes(saved, now)
  if changed:
    shown = ', '.join(f'{k} ({_short(_flatten(saved).get(k))} -> {_short(_flatten(now).get(k))})'
                      for k in changed[:6]) + (f' and {len(changed) - 6} more' if len(changed) > 6
                                               else '')
    raise ConfigError(
        f'the workdir {workdir!r} holds checkpoints of a run with a different config: {shown}. '
        'Use a new --workdir for a new experiment, or pass --allow_config_change to resume '
        'with the new values anyway.')


def _short(v):
  s = json.dumps(v) if v is not None else 'absent'
  return s if len(s) <= 40 else s[:37] + '...'


def write_text_atomic(path: str, text: str):
  """Writes text to path.tmp and renames it: a kill never leaves half a file."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w', newline='') as f:
    f.write(text)
  os.replace(tmp, path)


def write_json_atomic(path: str, obj):
  """Writes JSON atomically (`write_text_atomic`)."""
  write_text_atomic(path, json.dumps(obj, indent=2))
