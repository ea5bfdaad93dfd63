"""A paper table as code: every row × seed trained by `trainer.train_and_evaluate`, one file out.

A table is a config file (`configs/tables/main.py`, `configs/tables/ablation.py`) holding

    TITLE: str                               # the result file's title
    BASELINE: str                            # the row the AUC gains are measured against
    ROWS: dict[str, fn(config) -> config]    # row name -> a small edit of the shared base
    CLAIMS: list[(text, row, [other rows])]  # "row beats each of the others", checked per seed
    base_config(data, data_path[, preset]) -> ConfigDict   # the shared base at matched width
    PRESETS: tuple[str, ...]                 # optional: the budgets base_config takes (--preset)
    budget(config) -> str                    # one line naming the training budget

`run_table(table, data, seeds, workdir, out)` trains the rows (WORKDIR/<row>/seed<k>; the
seed changes parameter initialisation and batch order, never the data) and writes `out`
(.md) and a .csv beside it: AUC and logloss as mean ± std over seeds, the AUC gain over
BASELINE with a 95% paired-seed t interval, dense parameters, FLOPs per example, train
examples/s, plus GAUC, tail-item AUC and RelaImpr against BASELINE. A row whose summary.json
exists is read back, not retrained, so rerunning the command resumes a half-finished table;
every finished run is also kept in a run ledger beside `out` (results/<name>.runs.jsonl,
train/ledger.py), so a table resumes from a fresh checkout without its workdir. A row that
raises is written to failed.json, reported as failed and retried on the next run; the table
still completes.
"""
import math
import os
import re
import sys

import numpy as np
from scipy import stats

from deres_jax.train import jobs
from deres_jax.train import ledger as ledger_lib
from deres_jax.train import metrics as metrics_lib

OPTIONS = ('data_path', 'max_minutes', 'preset', 'rows')  # the launch/reproduce.py flags a paper table takes

def slug(row: str) -> str:
  """A row name as a directory name."""
  return re.sub(r'[^a-z0-9]+', '_', row.lower()).strip('_')


def partial_note(done: int, total: int, detail: str) -> str:
  """What a table's first line adds while rows are missing ('' when all `total` are done)."""
  if done >= total:
    return ''
  return f'   (PARTIAL: rows with every seed: {done} of {total}; {detail}; rerunning the command goes on)'


def paired_gain(a, b):
  """Mean and 95% half-width of a - b over paired seeds (None where fewer than 2 pairs)."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if len(d) < 2:
    return float(d.mean()) if len(d) else None, None
  half = float(stats.t.ppf(0.975, len(d) - 1)) * d.std(ddof=1) / math.sqrt(len(d))  # two-sided 95 %
  return float(d.mean()), float(half)


def verdict(mean, half) -> str:
  """'holds' (interval above 0), 'does not hold' (below 0) or 'not resolved' (contains 0)."""
  if mean is None or half is None:
    return 'not resolved (one seed)'
  if mean - half > 0:
    return 'holds'
  if mean + half < 0:
    return 'does not hold (reversed)'
  return 'not resolved (interval contains 0)'


def run_table(table, data: str, seeds: int, workdir: str, out: str, data_path: str = '',
              command: str = '', train_fn=None, dataset=None, max_minutes: float = 0.0,
              preset: str = '', rows: str = '') -> list:
  """Trains (or reads back) every row × seed of `table` and writes `out` and its .csv twin.

  Args:
    table: the table's config module (see the module docstring).
    data: 'synthetic' | 'criteo' | 'avazu' | 'csv' (passed to `table.base_config`).
    seeds: seeds per row (0 .. seeds-1).
    workdir: one sub-directory per row and seed; finished rows are read back.
    out: the markdown file; the CSV goes beside it (same name, .csv).
    data_path: directory of prepared data (real datasets).
    command: the command line written in the header.
    train_fn: `trainer.train_and_evaluate` or a stand-in with its signature (tests).
    dataset: a preloaded dataset (default: loaded once from the base config).
    max_minutes: > 0: start no job after this many minutes; < 0: train nothing, only rewrite
      the table from the runs finished so far. Either way a table with runs missing says
      PARTIAL in its first line and which rows are done; rerunning the command goes on.
    preset: the training budget, one of `table.PRESETS` ('' = the table's default).
    rows: '' (all), or the rows this run trains, comma-separated names or slugs (`slug`); the
      table still lists every row, the others read back when finished, else 'not run yet'
      (e.g. every fast row at every seed first, a slow row in a later run).
  Returns:
    The row dicts written to the CSV (failed rows included).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from deres_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from deres_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  if seeds < 1:
    raise ValueError(f'--seeds={seeds} must be at least 1.')
  if train_fn is None:
    from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
    train_fn = trainer.train_and_evaluate
  if preset and preset not in getattr(table, 'PRESETS', ()):
    raise ValueError(f'--preset={preset!r}: --table={table.NAME} takes '
                     + (f'one of {table.PRESETS}.' if hasattr(table, 'PRESETS') else 'no preset.'))
  def base_config():
    return table.base_config(data, data_path, preset) if preset else table.base_config(data, data_path)
  base = base_config()
  chosen = {r.strip() for r in rows.split(',') if r.strip()}
  unknown = sorted(chosen - set(table.ROWS) - {slug(n) for n in table.ROWS})
  if unknown:
    raise ValueError(f'--rows: {unknown[0]!r} is not a row of --table={table.NAME}; its rows: '
                     + ', '.join(slug(n) for n in table.ROWS) + '.')
  configs = {}
  for name, edit in table.ROWS.items():  # every row's config is checked before any training
    cfg = edit(base_config())
    try:
      config_lib.validate(cfg)
    except config_lib.ConfigError as e:
      raise ValueError(f'row {name!r}: {e}') from None
    configs[name] = cfg
  os.makedirs(workdir, exist_ok=True)
  # Seeds 1.. and reruns reuse the compiled steps (same shapes, same programs).
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  if dataset is None:
    dataset = data_lib.load(base.data)
  job_list = []
  for seed in range(seeds):
    for name in table.ROWS:
      cfg = configs[name].copy_and_resolve_references()
      cfg.seed = seed
      job_list.append(jobs.Job(f'{slug(name)}/seed{seed}', cfg, f'{name} seed {seed}'))
  results = jobs.run(job_list, workdir, train_fn, dataset=dataset, devices=jax.devices()[:1],
                     describe=lambda s: f"test AUC {s['test_auc']:.4f}", max_minutes=max_minutes,
                     ledger=ledger_lib.beside(out),
                     only=(lambda j: j.name.split('/')[0] in {slug(c) for c in chosen}) if chosen else None)
  runs = {name: [] for name in table.ROWS}
  errors = {}
  for job, r in zip(job_list, results):
    name = job.label.rsplit(' seed ', 1)[0]
    if r.summary is not None:
      runs[name].append(dict(r.summary, _seed=job.config.seed))   # pairs are matched by seed
    elif r.status == 'failed':  # a failed row is reported, never dropped; the next run retries it
      errors.setdefault(name, r.error)
  rows = _rows(table, runs, errors, seeds)
  _write(table, rows, runs, data, seeds, workdir, out, base, command, dataset)
  return rows


def _mean_std(values, digits=4):
  v = np.asarray(values, np.float64)
  if not len(v):
    return 'n/a'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.{digits}f}'


def _rows(table, runs, errors, seeds):
  base_runs = runs.get(table.BASELINE, [])
  rows = []
  for name, summaries in runs.items():
    row = {'row': name, 'seeds_done': len(summaries), 'seeds': seeds,
           'status': ('ok' if len(summaries) == seeds else 'failed' if name in errors else 'partial'),
           'error': errors.get(name, '')}
    if summaries:
      aucs = [s['test_auc'] for s in summaries]
      row.update(auc_mean=float(np.mean(aucs)), auc_std=float(np.std(aucs, ddof=1)) if len(aucs) > 1
                 else 0.0, logloss_mean=float(np.mean([s['test_logloss'] for s in summaries])),
                 logloss_std=float(np.std([s['test_logloss'] for s in summaries], ddof=1))
                 if len(summaries) > 1 else 0.0,
                 gauc=_mean_std([x['test_gauc'] for x in summaries if x.get('test_gauc') is not None]),
                 tail_auc=_mean_std([x['test_tail_auc'] for x in summaries
                                     if x.get('test_tail_auc') is not None]),
                 dense_params=summaries[0]['dense_params'],
                 flops_per_example=summaries[0]['flops_per_example'],
                 examples_per_second=float(np.mean([s['examples_per_second'] or 0 for s in summaries])))
      mine, base_aucs = _paired_aucs(summaries, base_runs)
      if mine and name != table.BASELINE:
        mean, half = paired_gain(mine, base_aucs)
        row.update(gain_mean=mean, gain_half=half,
                   relaimpr=metrics_lib.relaimpr(float(np.mean(mine)), float(np.mean(base_aucs))))
    rows.append(row)
  return rows


def _paired_aucs(a, b):
  """Test AUCs of two rows' runs over the seeds both have ('_seed', else the list position),
  so a seed missing in one row (failed, not run yet) never pairs two different seeds."""
  by_a = {s.get('_seed', i): s['test_auc'] for i, s in enumerate(a)}
  by_b = {s.get('_seed', i): s['test_auc'] for i, s in enumerate(b)}
  common = sorted(set(by_a) & set(by_b))
  return [by_a[k] for k in common], [by_b[k] for k in common]


def _cell_gain(r):
  if 'gain_mean' not in r:
    return '—'
  if r['gain_half'] is None:
    return f"{r['gain_mean']:+.4f}"
  return f"{r['gain_mean']:+.4f} [{r['gain_mean'] - r['gain_half']:+.4f}, {r['gain_mean'] + r['gain_half']:+.4f}]"


def claim_lines(table, runs) -> list:
  """One line per claim: the paired-seed AUC difference of its row against each other row."""
  lines = []
  for text, row, others in table.CLAIMS:
    parts, verdicts = [], []
    for other in others:
      a, b = _paired_aucs(runs.get(row, []), runs.get(other, []))
      if not a:
        parts.append(f'vs {other}: no result')
        verdicts.append('not resolved (a row failed)')
        continue
      mean, half = paired_gain(a, b)
      v = verdict(mean, half)
      verdicts.append(v)
      interval = '' if half is None else f' ± {half:.4f}'
      parts.append(f'vs {other} {mean:+.4f}{interval} ({v})')
    overall = ('holds' if all(v == 'holds' for v in verdicts) else
               'does not hold' if any(v.startswith('does not hold') for v in verdicts) else
               'not resolved')
    lines.append(f'- **{text}** — {overall} on this data: ' + '; '.join(parts) + '.')
  return lines


def _write(table, rows, runs, data, seeds, workdir, out, base, command, dataset):
  cmd = command or (f'python launch/reproduce.py --table={table.NAME} --data={data} '
                    f'--seeds={seeds} --workdir={workdir} --out={out}')
  ok = [r for r in rows if 'flops_per_example' in r]
  flops = [r['flops_per_example'] for r in ok]
  band = (f'FLOPs/example from {min(flops):,} to {max(flops):,} ({max(flops) / min(flops):.2f}x)'
          if flops else '')
  missing = [r['row'] for r in rows if r['status'] != 'ok']
  partial = partial_note(len(rows) - len(missing), len(rows), 'the others say how many seeds are done')
  lines = [
      f'<!-- produced by: {cmd}{partial} -->',
      f'# {table.TITLE} ({data}, {seeds} seeds)', '',
      f'Command: `{cmd}`', '',
      f'Data: {dataset.source}, {len(dataset.splits["train"]["label"]):,} train / '
      f'{len(dataset.splits["val"]["label"]):,} val / {len(dataset.splits["test"]["label"]):,} '
      f'test rows. Budget: {table.budget(base)}. Seeds 0..{seeds - 1} (init and batch order; '
      f'the data is one draw). Machine: {os.cpu_count()} CPU cores, 1 device. {band}.', '',
      f'Cells: test AUC, GAUC (per-user AUC weighted by rows, train/metrics.py; n/a without a user '
      f'field), tail-item AUC (rows whose item is among the least frequent '
      f'{base.eval.tail_fraction:.0%} of items by training count; n/a without an item field) and '
      f'logloss, mean ± std over seeds; gain = AUC − {table.BASELINE} AUC, mean over paired seeds '
      f'with a 95% t interval; RelaImpr = ((AUC − 0.5) / ({table.BASELINE} AUC − 0.5) − 1) × 100 % '
      'on the mean AUCs of the paired seeds; examples/s = training throughput.', '',
      f'| row | test AUC | test GAUC | tail-item AUC | test logloss | AUC gain vs {table.BASELINE} | '
      'RelaImpr | dense params | FLOPs/example | train examples/s | status |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    if 'auc_mean' not in r:
      what = f"failed: {r['error']}" if r['status'] == 'failed' else 'not run yet'
      lines.append(f"| {r['row']} | {what.split(':')[0]} | | | | — | — | — | — | — | {what} |")
      continue
    status = ('ok' if r['status'] == 'ok' else
              f"{r['seeds_done']} of {r['seeds']} seeds (the rest not run yet)" if r['status'] == 'partial'
              else f"failed {r['seeds'] - r['seeds_done']} of {r['seeds']} seeds: {r['error']}")
    relaimpr = f"{r['relaimpr']:+.2f} %" if 'relaimpr' in r else '—'
    lines.append(f"| {r['row']} | {r['auc_mean']:.4f} ± {r['auc_std']:.4f} | {r['gauc']} | {r['tail_auc']} | "
                 f"{r['logloss_mean']:.4f} ± {r['logloss_std']:.4f} | {_cell_gain(r)} | {relaimpr} | "
                 f"{r['dense_params']:,} | {r['flops_per_example']:,} | "
                 f"{r['examples_per_second']:,.0f} | {status} |")
  oracle = next((s[0].get('oracle_auc') for s in runs.values() if s), None)
  if oracle is not None:
    lines += ['', f'Oracle (true click probabilities) test AUC: {oracle:.4f}.']
  lines += ['', '## Claims, checked on this data', '',
            'Each claim compares test AUC over paired seeds: "holds" when the 95% interval of '
            'the difference lies above 0, "does not hold" when it lies below 0, "not resolved" '
            'otherwise.', ''] + claim_lines(table, runs)
  extra = getattr(table, 'extra_lines', None)
  if extra is not None:
    lines += extra(rows)
  lines.append('')
  keys = ['row', 'status', 'seeds_done', 'seeds', 'auc_mean', 'auc_std', 'gauc', 'tail_auc', 'logloss_mean',
          'logloss_std', 'gain_mean', 'gain_half', 'relaimpr', 'dense_params', 'flops_per_example',
          'examples_per_second', 'error']
  jobs.write_table(out, lines, rows, keys)
  print('\n'.join(lines), file=sys.stdout, flush=True)
