"""A sweep's report: trials sorted by the monitored validation metric, the results table and
the best trial's config file (deres_jax/train/sweep.py runs the trials)."""
import os
import pprint

# Summary fields of the results table: (summary key, column title).
COLUMNS = (('val_auc', 'val AUC'), ('val_logloss', 'val logloss'), ('test_auc', 'test AUC'),
           ('test_logloss', 'test logloss'), ('train_seconds', 'train s'))


def sort_rows(rows: list, monitor: str) -> list:
  """Finished rows best first by summary['val_<monitor>'] ('auc' up, 'logloss' down).

  A row is {'name', 'overrides', 'summary' (or None), 'error' (or None)}; rows without the
  metric (a trial that failed) come last, in their order.
  """
  sign, key = (-1.0 if monitor == 'auc' else 1.0), f'val_{monitor}'
  finished = lambda r: bool(r.get('summary')) and r['summary'].get(key) is not None
  done = [r for r in rows if finished(r)]
  rest = [r for r in rows if not finished(r)]
  return sorted(done, key=lambda r: sign * r['summary'][key]) + rest


def results_table(rows: list, fields: list, monitor: str) -> str:
  """A markdown table, one row per trial, best first by the monitored validation metric."""
  head = ['#', 'trial'] + list(fields) + [title for _, title in COLUMNS]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for rank, row in enumerate(sort_rows(rows, monitor), 1):
    summary = row.get('summary') or {}
    cells = [str(rank) if summary else '-', row['name']]
    cells += [row['overrides'][f] for f in fields]
    for key, _ in COLUMNS:
      v = summary.get(key)
      cells.append('-' if v is None else f'{v:.1f}' if key == 'train_seconds' else f'{v:.5f}')
    if row.get('error'):
      cells[-1] += f" (failed: {row['error']})"
    lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
  better = 'higher' if monitor == 'auc' else 'lower'
  return '\n'.join(lines) + f'\n\nSorted by validation {monitor} ({better} is better).\n'


def best_config_source(config, row: dict, monitor: str, workdir: str) -> str:
  """A config file (`get_config()`) with every field of the best trial's config."""
  done = ', '.join(f'{f}={t}' for f, t in row['overrides'].items())
  value = row['summary'][f'val_{monitor}']
  body = pprint.pformat(config.to_dict(), indent=1, width=100, sort_dicts=False)
  return (f'"""Best trial of the sweep in {workdir}: {row["name"]} (val {monitor} {value:.5f}).\n\n'
          f'  python launch/train.py --config={os.path.join(workdir, "best_config.py")} '
          '--workdir=/tmp/best\n\n'
          f'Swept values: {done}.\n'
          'Written by launch/sweep.py: every field of that trial\'s config, the base config and its\n'
          '--config overrides included.\n"""\n'
          'import ml_collections\n\n'
          f'CONFIG = {body}\n\n\n'
          'def get_config():\n'
          '  return ml_collections.ConfigDict(CONFIG)\n')
