"""The multi-scenario results table: every model of `models.MODELS` on the synthetic
multi-scenario generator, several seeds, per-scenario test AUC beside the oracle's.

  python launch/reproduce.py --table=multiscenario --data=synthetic --seeds=3 \
      --workdir=/tmp/ms_table --out=results/multiscenario_synthetic.md

One run per (model, seed) in WORKDIR/<model>/seed<k> through the job runner (train/jobs.py):
a row whose summary.json exists is read back, not retrained (rerun the command to resume a
table); a row that fails is listed under the table and retried by the next run. The data is
one draw (data seed 0, so one oracle row); the seeds change parameter
initialisation and batch order. Sizes (`table_config`) are chosen so the whole table fits
in about 12 minutes on 2 CPU cores; the tiny scenario has ~600 training rows.
"""
import csv
import os

import jax
import numpy as np

from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import load as load_data
from deres_jax.multiscenario import models
from deres_jax.train import jobs

DATASETS = ('synthetic',)
OPTIONS = ()  # launch/reproduce.py flags it takes beyond --data/--seeds/--workdir/--out


def table_config(name: str, seed: int):
  """The config of one row: a 64-32 MLP backbone, 3 epochs of 30k rows, purchase (CTCVR) target."""
  c = config_lib.base_config()
  c.seed = seed
  c.data.update(name='synthetic', seed=0, num_train=30_000, num_val=5_000, num_test=40_000)
  c.model = models.model_config(name, embed_dim=8, hidden=(64, 32))
  c.train.update(batch_size=512, num_steps=176, log_every=44)
  c.eval.update(every_steps=176, batch_size=8192, restore_best=False)
  c.ckpt.update(every_steps=0, max_to_keep=1)
  return c


def _mean_std(values):
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if not len(v):
    return 'n/a'
  return f'{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}'


def run_table(data: str, seeds: int, workdir: str, out: str) -> list:
  """Trains (or reads back) every row and writes `out` (.md) and its .csv twin.

  Args:
    data: 'synthetic' (the only table data for now).
    seeds: seeds per model (mean ± std over them).
    workdir: one sub-directory per model and seed; finished rows are skipped.
    out: the markdown file to write; the CSV goes beside it (same name, .csv).
  Returns:
    The list of row dicts written to the CSV.
  """
  if data not in DATASETS:
    raise ValueError(f'--data={data!r} has no multi-scenario table; choose one of {list(DATASETS)}.')
  if seeds < 1:
    raise ValueError(f'--seeds={seeds} must be at least 1.')
  os.makedirs(workdir, exist_ok=True)
  # Seeds 2.. and reruns reuse the compiled steps (same shapes, same programs).
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  names = list(models.MODELS)
  dataset = load_data(table_config(names[0], 0).data)
  job_list = [jobs.Job(f'{name}/seed{seed}', table_config(name, seed), f'{name} seed {seed}')
              for seed in range(seeds) for name in names]
  results = jobs.run(job_list, workdir, dataset=dataset, devices=jax.devices()[:1],
                     describe=lambda s: f"test wAUC {s['test']['wauc']:.4f}")
  runs, failed = {}, {}
  for job, r in zip(job_list, results):
    name = job.name.split('/')[0]
    if r.summary is not None:
      runs.setdefault(name, []).append(r.summary)
    else:  # reported under the table, retried by the next run
      failed.setdefault(name, r.error)
  rows = _rows(runs, dataset.scenario_names)
  _write(rows, runs, dataset, data, seeds, workdir, out, failed)
  return rows


def _rows(runs, scen):
  rows = []
  for name, summaries in runs.items():
    row = {'model': name}
    for s in scen:
      row[f'auc_{s}'] = _mean_std([x['test']['scenarios'][s]['auc'] for x in summaries])
    row['auc_overall'] = _mean_std([x['test']['auc'] for x in summaries])
    row['wauc'] = _mean_std([x['test']['wauc'] for x in summaries])
    row['wauc_mean'] = float(np.mean([x['test']['wauc'] for x in summaries]))
    for s in scen:
      row[f'auc_mean_{s}'] = float(np.mean([x['test']['scenarios'][s]['auc'] for x in summaries]))
    p = summaries[0]['params']
    row.update(params_shared=p['shared'], params_specific=p['scenario'],
               params_embedding=p['embedding'],
               examples_per_second=float(np.mean([x['examples_per_second'] or 0 for x in summaries])))
    rows.append(row)
  return rows


def _write(rows, runs, dataset, data, seeds, workdir, out, failed):
  scen = dataset.scenario_names
  if not runs:
    print('No row finished: ' + '; '.join(f'{k}: {v}' for k, v in failed.items()), flush=True)
    return
  oracle = next(iter(runs.values()))[0]['oracle']
  test = dataset.splits['test']
  counts = np.bincount(dataset.splits['train']['scenario'], minlength=len(scen))
  pos = [int(test['label'][test['scenario'] == i].sum()) for i in range(len(scen))]
  cmd = (f'python launch/reproduce.py --table=multiscenario --data={data} --seeds={seeds} '
         f'--workdir={workdir} --out={out}')
  best = {s: max(rows, key=lambda r: r[f'auc_mean_{s}'])['model'] for s in scen}
  best_w = max(rows, key=lambda r: r['wauc_mean'])['model']
  cfg = table_config('midpg', 0)
  lines = [
      f'<!-- produced by: {cmd} -->',
      f'# Multi-scenario models on synthetic data ({seeds} seeds)', '',
      f'Command: `{cmd}`', '',
      f'Data: `deres_jax/multiscenario/synthetic.py`, data seed 0, {len(scen)} scenarios, '
      f'training rows per scenario {", ".join(f"{s}={n}" for s, n in zip(scen, counts))}; '
      f'target purchase (CTCVR); test rows {len(test["label"])} (positives per scenario '
      f'{", ".join(map(str, pos))}). Every model: embed_dim {cfg.model.embed_dim}, MLP widths '
      f'{tuple(cfg.model.hidden)}, Adam (library defaults), batch {cfg.train.batch_size}, '
      f'{cfg.train.num_steps} steps (3 epochs), 1 CPU device; last-step parameters. '
      'Cells: test AUC mean ± std over seeds (the seed changes init and batch order, not '
      'the data). wAUC = sample-weighted mean of the per-scenario AUCs.', '',
      '| model | ' + ' | '.join(f'AUC {s}' for s in scen) +
      ' | overall AUC | wAUC | params shared | params specific | params embedding | examples/s |',
      '|---|' + '---|' * (len(scen) + 6)]
  for r in rows:
    cells = [f"**{r[f'auc_{s}']}**" if best[s] == r['model'] else r[f'auc_{s}'] for s in scen]
    wauc = f"**{r['wauc']}**" if best_w == r['model'] else r['wauc']
    lines.append(f"| {r['model']} | " + ' | '.join(cells) +
                 f" | {r['auc_overall']} | {wauc} | {r['params_shared']} | {r['params_specific']} | "
                 f"{r['params_embedding']} | {r['examples_per_second']:.0f} |")
  lines.append('| oracle | ' + ' | '.join(f"{oracle['scenarios'][s]['auc']:.4f}" for s in scen) +
               f" | {oracle['auc']:.4f} | {oracle['wauc']:.4f} | | | | |")
  lines += ['', 'Bold: the best mean in the column. The smallest scenario\'s test AUC rests on '
            f'{pos[-1]} positives, so its std over seeds understates the sampling error '
            f'(about ±{0.5 / np.sqrt(max(pos[-1], 1)):.2f} AUC).', '']
  lines += [f'Failed (retried by the next run of the command): {name}: {error}' for name, error in failed.items()]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write('\n'.join(lines))
  with open(os.path.splitext(out)[0] + '.csv', 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  print('\n'.join(lines), flush=True)
