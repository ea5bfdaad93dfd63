"""A grid or random search over config fields: each trial a normal run in its own workdir.

  python launch/sweep.py --config=configs/quickstart.py --workdir=/tmp/sweep \
      --sweep.optim.learning_rate=1e-3,2e-3 --sweep.model.width=32,64

The pieces are plain functions (docs/sweep.md): `split_sweep_flags` takes the
`--sweep.<field>=v1,v2,...` flags out of argv, `expand` turns the axes into trials (the grid,
or `num_trials` distinct points of it), `trial_config` applies one trial to the base config,
`run` validates every trial, then trains those without a summary.json, and `results_table`
sorts the finished trials by the monitored validation metric.

A trial's overrides are kept as the command-line texts, as given: they name the trial, are
recorded in WORKDIR/sweep.json, and are parsed again for each trial (a model field's type
depends on the model, which `--sweep.model.name` can change).
"""
import ast
import itertools
import json
import os
import random
import re

import jax
import ml_collections

from deres_jax import config as config_lib
from deres_jax.train import jobs
# The report (sorting, results.md, best_config.py) lives in sweep_report.py; its names stay here too.
from deres_jax.train.sweep_report import COLUMNS, best_config_source, results_table, sort_rows  # noqa: F401
from deres_jax.train import trainer


class SweepError(ValueError):
  """A sweep that cannot run as asked (flags, num_trials, a workdir of another sweep)."""


# ---------------------------------------------------------------- Flags and values.

def split_sweep_flags(argv):
  """Takes the --sweep.<field>=<values> flags out of argv: (other argv, [(field, [texts])]).

  Fields keep the order of the flags (the first one varies slowest in the grid).
  """
  rest, axes, i = [], [], 0
  prefix = '--sweep.'
  while i < len(argv):
    arg = argv[i]
    if arg.startswith(prefix):
      field, eq, text = arg[len(prefix):].partition('=')
      if not eq and i + 1 < len(argv):  # '--sweep.model.width 32,64'
        i += 1
        text = argv[i]
      if any(f == field for f, _ in axes):
        raise SweepError(f'--sweep.{field} is given twice; list all its values in one flag.')
      axes.append((field, split_values(text)))
    else:
      rest.append(arg)
    i += 1
  for field, values in axes:
    if field.startswith('config.'):
      raise SweepError(f'write --sweep.{field[len("config."):]}, not --sweep.{field} (fields are named as '
                       'after --config.).')
    if not field or not values or any(not v for v in values):
      raise SweepError(f'--sweep.{field}={",".join(values)!r} needs a field and comma-separated, '
                       "non-empty values, e.g. --sweep.optim.learning_rate=1e-3,2e-3.")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
      raise SweepError(f'--sweep.{field} lists {dupes[0]!r} more than once.')
  return rest, axes


def split_values(text: str) -> list:
  """'1e-3,2e-3' -> ['1e-3', '2e-3']; '(256,),(512,256)' -> ['(256,)', '(512,256)'].

  Commas inside brackets or quotes do not split. With a ';' anywhere, the text is split at
  ';' only (for values whose commas are not inside brackets).
  """
  if ';' in text:
    return [v.strip() for v in text.split(';')]
  values, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in '\'"':
      quote = ch
    elif ch in '([{':
      depth += 1
    elif ch in ')]}':
      depth -= 1
    elif ch == ',' and depth == 0:
      values.append(text[start:i].strip())
      start = i + 1
  values.append(text[start:].strip())
  return values


def parse_value(field: str, text: str, current):
  """The text of a non-model field, parsed to the type of its current value `current`."""
  try:
    if isinstance(current, bool):
      if text.lower() in ('true', '1', 'yes'):
        return True
      if text.lower() in ('false', '0', 'no'):
        return False
      raise ValueError
    if isinstance(current, int):
      value = ast.literal_eval(text)
      if isinstance(value, float) and value.is_integer():  # '1e3'
        value = int(value)
      if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError
      return value
    if isinstance(current, float):
      return float(text)
    if isinstance(current, str):
      return text
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(text)
      if not isinstance(value, (tuple, list)):
        value = (value,)  # '0.5' for a one-element tuple
      return tuple(value)
  except (ValueError, SyntaxError):
    raise config_lib.ConfigError(f'config.{field}={text!r} is not a {type(current).__name__}.') from None
  try:  # None or another type: a Python literal, else the text itself
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _unknown_field(field: str) -> config_lib.ConfigError:
  """The error config.validate gives for `field` (an unknown key, with a suggestion)."""
  probe = {}
  node = probe
  for part in field.split('.')[:-1]:
    node = node.setdefault(part, {})
  node[field.split('.')[-1]] = 0
  try:
    config_lib.validate(ml_collections.ConfigDict(probe))
  except config_lib.ConfigError as e:
    return e
  return config_lib.ConfigError(f'Unknown config key {field!r}.')


# ---------------------------------------------------------------- Trials.

def grid_size(axes) -> int:
  size = 1
  for _, values in axes:
    size *= len(values)
  return size


def expand(axes, mode: str = 'grid', num_trials: int = 0, seed: int = 0) -> list:
  """The trials of a sweep: a list of {field: text}, in the order they run.

  Args:
    axes: [(field, [texts])] from `split_sweep_flags`.
    mode: 'grid' (every combination; the last axis varies fastest) or 'random'.
    num_trials: random mode: how many distinct grid points to draw.
    seed: random mode: seed of the draw.
  Returns:
    One dict of overrides per trial, fields in the order of `axes`.
  """
  fields = [f for f, _ in axes]
  if mode == 'grid':
    if num_trials:
      raise SweepError(f'--num_trials={num_trials} is for --mode=random; the grid has all '
                       f'{grid_size(axes)} combinations.')
    return [dict(zip(fields, combo)) for combo in itertools.product(*[v for _, v in axes])]
  if mode != 'random':
    raise SweepError(f"--mode={mode!r} is not one of ['grid', 'random'].")
  total = grid_size(axes)
  if not 0 < num_trials <= total:
    raise SweepError(f'--mode=random needs 1 <= --num_trials <= {total} (the size of the grid), '
                     f'got {num_trials}.')
  trials = []
  # Indices into the grid, decoded in mixed radix: no grid is built, however large it is.
  for index in random.Random(seed).sample(range(total), num_trials):
    trial = {}
    for field, values in reversed(axes):
      index, k = divmod(index, len(values))
      trial[field] = values[k]
    trials.append({f: trial[f] for f in fields})
  return trials


def trial_name(index: int, overrides: dict) -> str:
  """'trial_003_0.002_64': the index and a short slug of the values (for a directory name)."""
  slug = '_'.join(re.sub(r'[^A-Za-z0-9.+-]+', '-', v).strip('-') for v in overrides.values())
  return f'trial_{index:03d}_{slug[:60]}'.rstrip('_-')


def trial_config(config, overrides: dict, model_flags=()) -> ml_collections.ConfigDict:
  """`config` with one trial's overrides; the model section as launch/train.py builds it.

  Args:
    config: the base config (the config file with its --config.* overrides).
    overrides: {field: text} of the trial, e.g. {'optim.learning_rate': '2e-3'}.
    model_flags: the [(field, text)] --config.model.* flags (`config.split_model_flags`); they
      apply to every trial, before the trial's own model fields.
  Returns:
    A new config (unlocked); `config` is left as it is.
  Raises:
    ConfigError: an unknown field or a value that does not parse (one sentence).
  """
  c = config.copy_and_resolve_references()
  c.unlock()
  model_pairs = list(model_flags)
  for field, text in overrides.items():
    if field.startswith('model.'):
      model_pairs.append((field[len('model.'):], text))
      continue
    *path, key = field.split('.')
    node = c
    for part in path:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise _unknown_field(field)
      node = node[part]
    if key not in node:
      raise _unknown_field(field)
    if isinstance(node[key], ml_collections.ConfigDict):
      raise config_lib.ConfigError(f'config.{field} is a section, not a field; sweep one of its '
                                   f'fields, e.g. {field}.{next(iter(node[key]))}.')
    with node.ignore_type():  # the type is checked by config.validate, with its message
      node[key] = parse_value(field, text, node[key])
  # Model fields as launch/train.py applies them: the name first (switching the section).
  return config_lib.apply_model_overrides(c, model_pairs)


def _write_atomic(path: str, text: str):
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)  # a reader never sees half a file, a kill leaves the old one


def _json(x):
  """JSON-comparable form (tuples become lists), as sweep.json reads back."""
  return json.loads(json.dumps(x, default=str))


def _check_spec(path: str, spec: dict):
  """Writes WORKDIR/sweep.json, or checks that the one there describes the same sweep."""
  if not os.path.exists(path):
    _write_atomic(path, json.dumps(spec, indent=2, default=str) + '\n')
    return
  with open(path) as f:
    old = json.load(f)
  new = _json(spec)
  if old == new:
    return
  where = next((k for k in new if old.get(k) != new[k]), None) or next(iter(old))
  if where == 'axes':
    was, now = dict(old.get(where, [])), dict(new[where])
    field = next(f for f in list(now) + list(was) if was.get(f) != now.get(f))
    show = lambda values: ','.join(values) if values else '(not swept)'
    what = f'--sweep.{field} was {show(was.get(field))}, now {show(now.get(field))}'
  elif where == 'base_config':
    keys = sorted(set(old[where]) | set(new[where]))
    diff = next(k for k in keys if old[where].get(k) != new[where].get(k))
    what = f'config.{diff} was {old[where].get(diff)!r}, now {new[where].get(diff)!r}'
  else:
    what = f'{where} was {_short(old.get(where))}, now {_short(new.get(where))}'
  raise SweepError(f'{path} describes another sweep ({what}); rerun with the same flags to '
                   'resume it, or use a new --workdir for this one.')


def _short(x, limit=160):
  text = repr(x)
  return text if len(text) <= limit else text[:limit] + '...'


def _flatten(cfg, prefix=''):
  out = {}
  for k, v in cfg.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


# ---------------------------------------------------------------- The sweep.

def run(config, workdir: str, axes, model_flags=(), mode: str = 'grid', num_trials: int = 0,
        seed: int = 0) -> list:
  """Runs a sweep in `workdir`; rerunning the same sweep skips or resumes its trials.

  Every trial's config is validated before the first one trains. WORKDIR/sweep.json records
  the trials; each trial trains in WORKDIR/<trial name> through the job runner (train/jobs.py:
  a finished trial is read back, a failed one is recorded and retried by the next run, a killed
  one resumes from its checkpoint). After every trial
  WORKDIR/results.md is rewritten; at the end the best trial's config is written to
  WORKDIR/best_config.py and best_config.json.

  Args:
    config: the base config (config file and --config.* overrides, model flags not yet applied).
    workdir: directory of the sweep.
    axes: [(field, [texts])] from `split_sweep_flags`.
    model_flags: --config.model.* flags [(field, text)], applied to every trial.
    mode, num_trials, seed: see `expand`.
  Returns:
    The rows of `results_table`, in trial order.
  Raises:
    SweepError: no axes, bad num_trials, or a sweep.json of another sweep in `workdir`.
    ConfigError: a trial whose config is invalid, naming the trial.
  """
  if not axes:
    raise SweepError('give at least one --sweep.<field>=v1,v2,... flag.')
  trials = expand(axes, mode, num_trials, seed)
  names = [trial_name(i, t) for i, t in enumerate(trials)]
  n = len(trials)
  # ------------------------------------------------------------ Validate every trial first.
  configs = []
  for i, (name, overrides) in enumerate(zip(names, trials)):
    try:
      configs.append(config_lib.validate(trial_config(config, overrides, model_flags),
                                         num_devices=jax.device_count()))
    except config_lib.ConfigError as e:
      values = ', '.join(f'{f}={t}' for f, t in overrides.items())
      raise config_lib.ConfigError(f'trial {i + 1}/{n} ({values}): {e}') from None
  monitor = config.eval.monitor
  # ------------------------------------------------------------ sweep.json.
  os.makedirs(workdir, exist_ok=True)
  spec = {'axes': axes, 'mode': mode, 'num_trials': n, 'seed': seed if mode == 'random' else None,
          'model_flags': list(model_flags), 'base_config': _flatten(config),
          'trials': [{'name': nm, 'overrides': t} for nm, t in zip(names, trials)]}
  _check_spec(os.path.join(workdir, 'sweep.json'), spec)
  fields = [f for f, _ in axes]
  print(f'Sweep of {n} trials ({mode} over {", ".join(fields)}) in {workdir}', flush=True)
  # ------------------------------------------------------------ Trials (the job runner).
  rows = []

  def record(result):  # results.md is rewritten after every trial: readable while the sweep runs
    i = len(rows)
    rows.append({'name': names[i], 'overrides': trials[i], 'summary': result.summary,
                 'error': result.error})
    _write_atomic(os.path.join(workdir, 'results.md'), results_table(rows, fields, monitor))

  labels = [' '.join(f'{f}={t}' for f, t in o.items()) for o in trials]
  jobs.run([jobs.Job(nm, cfg, label) for nm, cfg, label in zip(names, configs, labels)], workdir,
           trainer.train_and_evaluate, describe=_metrics, on_result=record)
  # ------------------------------------------------------------ Results.
  table = results_table(rows, fields, monitor)
  print('\n' + table, flush=True)
  best = sort_rows(rows, monitor)[0]
  if best['summary'] is None or best['summary'].get(f'val_{monitor}') is None:
    print('No trial finished: no best_config.py written.', flush=True)
    return rows
  best_cfg = configs[names.index(best['name'])]
  _write_atomic(os.path.join(workdir, 'best_config.py'),
                best_config_source(best_cfg, best, monitor, workdir))
  _write_atomic(os.path.join(workdir, 'best_config.json'), best_cfg.to_json_best_effort(indent=2) + '\n')
  print(f'Best: {best["name"]} ({_metrics(best["summary"])}); its config: '
        f'{os.path.join(workdir, "best_config.py")}', flush=True)
  return rows


def _metrics(summary: dict) -> str:
  def fmt(key):
    return '-' if summary.get(key) is None else f'{summary[key]:.5f}'
  return (f"val auc {fmt('val_auc')} logloss {fmt('val_logloss')}, "
          f"test auc {fmt('test_auc')} logloss {fmt('test_logloss')}")
