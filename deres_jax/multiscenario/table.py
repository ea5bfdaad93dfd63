"""The multi-scenario results table: every model of `models.MODELS`, several seeds, per-scenario
test AUC (beside the oracle's on synthetic data) and a paired comparison of MI-DPG with each baseline.

  python launch/reproduce.py --table=multiscenario --data=synthetic --seeds=5 --preset=converged \
      --workdir=/work/runs/ms_synthetic --out=results/multiscenario_synthetic.md
  python launch/reproduce.py --table=multiscenario --data=amazon --data_path=/tmp/amz/ms.csv \
      --seeds=5 --preset=converged --workdir=/work/runs/ms_amazon --out=results/multiscenario_amazon.md

One run per (model, seed) in WORKDIR/<model>/seed<k> through the job runner (train/jobs.py):
a row whose summary.json exists is read back, not retrained (rerun the command to resume a
table); a row that fails is listed under the table and retried by the next run; the table is
rewritten after every run (PARTIAL in its first line until every run is done). The data is
one draw (data seed 0: one synthetic draw and oracle, one split of the Amazon CSV); the seeds
change parameter initialisation and batch order, so seed k of two models is a paired sample.

Data (`--data`): `synthetic` (deres_jax/multiscenario/synthetic.py, purchase = CTCVR target) or
`amazon` (the three-category Amazon CSV of `benchmarks/make_amazon_flat_csv.py --categories`,
read by configs/multiscenario/amazon.py; `--data_path` is the CSV).
"""
import json
import os

import jax
import numpy as np
from scipy import stats

from deres_jax import config as ctr_config
from deres_jax.multiscenario import config as config_lib
from deres_jax.multiscenario import load as load_data
from deres_jax.multiscenario import models
from deres_jax.train import jobs
from deres_jax.train import ledger as ledger_lib

DATASETS = ('synthetic', 'amazon')
OPTIONS = ('data_path', 'preset', 'max_minutes')  # launch/reproduce.py flags it takes beyond --data/--seeds/...
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Budget presets (`--preset`): the same recipe for every model. 'short' is the table before
# issue 32 (3 epochs, last-step parameters); 'converged' trains up to `num_epochs` with validation
# every half epoch, stops after `patience` validations without a gain in validation wAUC and
# tests the best-validation parameters, with Adam(1e-3) and weight decay 1e-5 as L2 in the
# gradient (Scenario-Wise Rec's CTRTrainer: torch Adam(lr=1e-3, weight_decay=1e-5), early stopping
# on validation AUC). 'synthetic_train' is the synthetic training rows (4x the short preset's:
# with 30k rows every model stopped 0.10 below the oracle, so more rows leave room to separate).
# 'embed_l2_prior' > 0 adds the embedding L2 lambda = prior / training rows (train/regularization.py):
# on the Amazon table (3 seeds) a prior of 100 lifted every model's test wAUC by +0.015 to +0.026 over
# none (MI-DPG 0.7243 -> 0.7501, M2M 0.7348 -> 0.7532; docs/multiscenario.md); 'converged_no_embed_l2'
# is the 'converged' recipe before that (the tables of issue 32).
_CONVERGED = {'synthetic_train': 120_000, 'batch_size': 512, 'num_steps': 0, 'num_epochs': 12.0,
              'every_epochs': 0.5, 'patience': 4, 'restore_best': True, 'weight_decay': 1e-5}
PRESETS = {
    'short': {'synthetic_train': 30_000, 'batch_size': 512, 'num_steps': 176, 'num_epochs': 0.0,
              'every_epochs': 0.0, 'patience': 0, 'restore_best': False, 'weight_decay': 0.0,
              'embed_l2_prior': 0.0},
    'converged': dict(_CONVERGED, embed_l2_prior=100.0),
    'converged_no_embed_l2': dict(_CONVERGED, embed_l2_prior=0.0),
}


def table_config(name: str, seed: int, preset: str = 'short', data: str = 'synthetic', data_path: str = ''):
  """The config of one row: model `name` (a 64-32 MLP backbone), `seed`, the preset's budget.

  Args:
    name: a key of `models.MODELS`.
    seed: parameter initialisation and batch order (the data and its split stay seed 0).
    preset: a key of `PRESETS`.
    data: 'synthetic' or 'amazon'.
    data_path: the Amazon multi-scenario CSV (data 'amazon').
  """
  if preset not in PRESETS:
    raise ValueError(f'--preset={preset!r} is not a multiscenario table preset; choose one of {sorted(PRESETS)}.')
  if data not in DATASETS:
    raise ValueError(f'--data={data!r} has no multi-scenario table; choose one of {list(DATASETS)}.')
  p = PRESETS[preset]
  if data == 'amazon':
    c = ctr_config.load_file(os.path.join(_ROOT, 'configs', 'multiscenario', 'amazon.py'))
    c.data.train_file = data_path or c.data.train_file
  else:
    c = config_lib.base_config()
    c.data.update(name='synthetic', seed=0, num_train=p['synthetic_train'], num_val=5_000 if preset == 'short'
                  else 10_000, num_test=40_000)
  c.seed = seed
  c.model = models.model_config(name, embed_dim=8, hidden=(64, 32))
  every = p['num_steps'] or 100
  c.train.update(batch_size=p['batch_size'], num_steps=p['num_steps'] or 1, num_epochs=p['num_epochs'],
                 log_every=min(every, 100), progress=False)
  c.eval.update(monitor='wauc', every_steps=every, every_epochs=p['every_epochs'], batch_size=8192,
                patience=p['patience'], restore_best=p['restore_best'])
  c.optim.update(name='adam', embed_name='adam', learning_rate=1e-3, embed_learning_rate=1e-3,
                 weight_decay=p['weight_decay'], embed_l2=0.0, embed_l2_prior=p['embed_l2_prior'])
  c.ckpt.update(every_steps=0, max_to_keep=1)
  return c


def _mean_std(values):
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  if not len(v):
    return 'n/a'
  return f'{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}'


def run_table(data: str, seeds: int, workdir: str, out: str, preset: str = 'short', data_path: str = '',
              max_minutes: float = 0.0) -> list:
  """Trains (or reads back) every row and writes `out` (.md) and its .csv twin after each run.

  Args:
    data: 'synthetic' or 'amazon' (`--data`).
    seeds: seeds per model (0 .. seeds-1; mean ± std over them).
    workdir: one sub-directory per model and seed; finished rows are skipped.
    out: the markdown file to write; the CSV goes beside it (same name, .csv).
    preset: a key of `PRESETS` (`--preset`).
    data_path: the Amazon multi-scenario CSV (`--data_path`, data 'amazon').
    max_minutes: start no new run after this many minutes (0 = no limit; < 0 = train nothing
      new, only rewrite the table from the finished runs).
  Returns:
    The list of row dicts written to the CSV.
  """
  if seeds < 1:
    raise ValueError(f'--seeds={seeds} must be at least 1.')
  if data == 'amazon' and not os.path.exists(data_path):
    raise ValueError(f'--data=amazon needs --data_path=<the CSV of benchmarks/make_amazon_flat_csv.py '
                     f'--categories>; {data_path!r} does not exist.')
  os.makedirs(workdir, exist_ok=True)
  # Seeds 1.. and reruns reuse the compiled steps (same shapes, same programs).
  jax.config.update('jax_compilation_cache_dir', os.path.join(workdir, 'xla_cache'))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  names = list(models.MODELS)
  configs = {(n, k): table_config(n, k, preset, data, data_path) for k in range(seeds) for n in names}
  dataset = load_data(configs[names[0], 0].data)
  job_list = [jobs.Job(f'{n}/seed{k}', configs[n, k], f'{n} seed {k}') for k in range(seeds) for n in names]
  runs = {n: {} for n in names}      # model -> {seed: summary}
  failed = {}
  cmd = (f'python launch/reproduce.py --table=multiscenario --data={data} ' +
         (f'--data_path={data_path} ' if data == 'amazon' else '') +
         f'--seeds={seeds} --preset={preset} --workdir={workdir} --out={out}')
  ctx = dict(data=data, seeds=seeds, preset=preset, cmd=cmd, out=out, total=len(job_list), workdir=workdir,
             config=configs[names[0], 0])

  def record(result):
    name, seed = result.job.name.split('/')
    if result.summary is not None:
      runs[name][int(seed[4:])] = result.summary
      failed.pop(name, None)
    elif result.status == 'failed':  # reported under the table, retried by the next run
      failed[name] = result.error
    _write(runs, dataset, ctx, failed)

  jobs.run(job_list, workdir, dataset=dataset, devices=jax.devices()[:1], on_result=record,
           max_minutes=max_minutes, describe=lambda s: f"test wAUC {s['test']['wauc']:.4f}",
           ledger=ledger_lib.beside(out))
  return _write(runs, dataset, ctx, failed)


def _rows(runs, scen):
  rows = []
  for name, by_seed in runs.items():
    summaries = [by_seed[k] for k in sorted(by_seed)]
    if not summaries:
      continue
    row = {'model': name, 'seeds': len(summaries)}
    for s in scen:
      row[f'auc_{s}'] = _mean_std([x['test']['scenarios'][s]['auc'] for x in summaries])
    row['auc_overall'] = _mean_std([x['test']['auc'] for x in summaries])
    row['logloss'] = _mean_std([x['test']['logloss'] for x in summaries])
    row['wauc'] = _mean_std([x['test']['wauc'] for x in summaries])
    row['wauc_mean'] = float(np.mean([x['test']['wauc'] for x in summaries]))
    for s in scen:
      row[f'auc_mean_{s}'] = float(np.mean([x['test']['scenarios'][s]['auc'] for x in summaries]))
    p = summaries[0]['params']
    row.update(params_shared=p['shared'], params_specific=p['scenario'], params_embedding=p['embedding'],
               best_epoch=float(np.mean([x['best_step'] / x['steps'] * x['epochs'] for x in summaries])),
               epochs=float(np.mean([x['epochs'] for x in summaries])),
               stopped_early=sum(bool(x['stopped_early']) for x in summaries),
               train_seconds=float(np.mean([x['train_seconds'] for x in summaries])),
               examples_per_second=float(np.mean([x['examples_per_second'] or 0 for x in summaries])))
    rows.append(row)
  return rows


def paired(runs, a: str, b: str, metric=lambda s: s['test']['wauc']):
  """Model `a` minus model `b` on the seeds both finished: (mean, sd, n, two-sided paired t-test p).

  Seed k of two models shares the data and the split (only init and batch order differ), so
  the seeds are paired samples; the test set is fixed, so p speaks of training randomness only.
  """
  common = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
  d = np.asarray([metric(runs[a][k]) - metric(runs[b][k]) for k in common], np.float64)
  if len(d) < 2:
    return (float(d.mean()) if len(d) else float('nan')), float('nan'), len(d), float('nan')
  sd = float(d.std(ddof=1))
  p = float(2 * stats.t.sf(abs(d.mean()) / (sd / np.sqrt(len(d))), len(d) - 1)) if sd > 0 else 0.0
  return float(d.mean()), sd, len(d), p


def holm(pvalues):
  """Holm's step-down adjustment of `pvalues` (family-wise error over the comparisons); nan stays nan."""
  p = np.asarray(pvalues, np.float64)
  ok = np.flatnonzero(np.isfinite(p))
  out = np.full(len(p), np.nan)
  running = 0.0
  for rank, i in enumerate(ok[np.argsort(p[ok])]):
    running = max(running, min(1.0, (len(ok) - rank) * p[i]))
    out[i] = running
  return out


def _verdict(runs, rows):
  """The paired comparison lines and one sentence on "MI-DPG beats the baselines"."""
  if not runs.get('midpg'):
    return ['No MI-DPG run has finished yet.']
  lines = ['| baseline | MI-DPG − baseline wAUC (mean ± sd) | seeds | paired t-test p | Holm p (all baselines) | '
           'resolved (p < 0.05) |', '|---|---|---|---|---|---|']
  tests = {n: paired(runs, 'midpg', n) for n in runs if n != 'midpg' and runs[n]}
  tests = {n: t for n, t in tests.items() if t[2]}
  adjusted = dict(zip(tests, holm([t[3] for t in tests.values()])))
  better, worse, open_ = [], [], []
  for name, (mean, sd, n, p) in tests.items():
    resolved = np.isfinite(p) and p < 0.05
    (better if resolved and mean > 0 else worse if resolved else open_).append(name)
    lines.append(f'| {name} | {mean:+.4f} ± {sd:.4f} | {n} | {p:.3f} | {adjusted[name]:.3f} | '
                 f"{('yes: MI-DPG better' if mean > 0 else 'yes: MI-DPG worse') if resolved else 'no'} |")
  held = [n for n, q in adjusted.items() if q < 0.05]
  best = max(rows, key=lambda r: r['wauc_mean'])['model']
  said = (f'MI-DPG is resolved better than {len(better)} baseline(s) ({", ".join(better) or "none"}), '
          f'resolved worse than {len(worse)} ({", ".join(worse) or "none"}) and not resolved against '
          f'{len(open_)} ({", ".join(open_) or "none"}); after Holm\'s correction for the {len(tests)} comparisons '
          f'{len(held)} difference(s) stay resolved ({", ".join(held) or "none"}); the best mean wAUC is {best}\'s. ')
  said += ('"MI-DPG beats the baselines" holds on this data.' if better and not worse and not open_ else
           '"MI-DPG beats the baselines" does NOT hold on this data.')
  return lines + ['', '**Verdict** (computed from the rows above, the same recipe for every model): ' + said]


def _wall_minutes(workdir, runs) -> float:
  """Wall minutes of the finished runs, as the job runner recorded them (WORKDIR/<run>/job.json)."""
  total = 0.0
  for name, by_seed in runs.items():
    for k in by_seed:
      try:
        with open(os.path.join(workdir, name, f'seed{k}', 'job.json')) as f:
          total += json.load(f).get('seconds') or 0.0
      except (OSError, ValueError):
        pass
  return total / 60


def _write(runs, dataset, ctx, failed):
  scen = dataset.scenario_names
  rows = _rows(runs, scen)
  if not rows:
    print('No row finished: ' + '; '.join(f'{k}: {v}' for k, v in failed.items()), flush=True)
    return rows
  done = sum(len(v) for v in runs.values())
  cfg, data, seeds, preset = ctx['config'], ctx['data'], ctx['seeds'], ctx['preset']
  oracle = next(s for v in runs.values() for s in v.values())['oracle']
  test = dataset.splits['test']
  counts = np.bincount(dataset.splits['train']['scenario'], minlength=len(scen))[:len(scen)]
  pos = [int(test['label'][test['scenario'] == i].sum()) for i in range(len(scen))]
  best = {s: max(rows, key=lambda r: r[f'auc_mean_{s}'])['model'] for s in scen}
  best_w = max(rows, key=lambda r: r['wauc_mean'])['model']
  p = PRESETS[preset]
  budget = (f'up to {p["num_epochs"]:g} epochs, validation every {p["every_epochs"]:g} epoch, early stopping '
            f'after {p["patience"]} validations without a gain in validation wAUC, test on the best-validation '
            f'parameters; Adam lr 1e-3 with weight decay {p["weight_decay"]:g} as L2 in the gradient '
            "(Scenario-Wise Rec's protocol)" + (
                f'; embedding L2 lambda = {p["embed_l2_prior"]:g} / training rows = '
                f'{p["embed_l2_prior"] / max(int(counts.sum()), 1):.2g}' if p['embed_l2_prior'] else
                '; no embedding L2 beyond the weight decay') if p['num_epochs'] else
            f'{p["num_steps"]} steps, Adam lr 1e-3, last-step parameters')
  source = ('`deres_jax/multiscenario/synthetic.py`, data seed 0, target purchase (CTCVR)' if data == 'synthetic'
            else f'`{cfg.data.train_file}` (configs/multiscenario/amazon.py: Amazon 2014 5-core, one scenario per '
            'category, click = a real next interaction vs one uniformly sampled unseen item; split 8:1:1 by user; '
            'built by `python benchmarks/make_amazon_flat_csv.py --categories=Beauty,Sports_and_Outdoors,'
            'Toys_and_Games --user_fraction=0.17 --source=../shared/data/amazon/s3rec '
            f'--out={cfg.data.train_file}`)')
  status = (f'PARTIAL ({done}/{ctx["total"]} runs finished; rows with fewer than {seeds} seeds say so in the '
            '"seeds" column): ' if done < ctx['total'] else '')
  lines = [
      f'<!-- {status}produced by: {ctx["cmd"]} -->',
      f'# Multi-scenario models on {data} data (preset `{preset}`, {seeds} seeds)', '',
      f'{status}Command: `{ctx["cmd"]}`', '',
      f'Data: {source}; {len(scen)} scenarios, training rows per scenario '
      f'{", ".join(f"{s}={n}" for s, n in zip(scen, counts))}; test rows {len(test["label"])} (positives per '
      f'scenario {", ".join(map(str, pos))}). Budget (preset `{preset}`, every model alike): embed_dim '
      f'{cfg.model.embed_dim}, MLP widths {tuple(cfg.model.hidden)}, batch {cfg.train.batch_size}, {budget}; '
      f'1 CPU device; {_wall_minutes(ctx["workdir"], runs):.1f} min of wall time for the {done} runs '
      '(job runner, one after another, including compilation and validation). Cells: test AUC mean ± std '
      'over seeds (a seed changes init and batch order, not the data). '
      'wAUC = sample-weighted mean of the per-scenario AUCs. Params: shared / scenario-specific / embedding.', '',
      '| model | seeds | ' + ' | '.join(f'AUC {s}' for s in scen) +
      ' | overall AUC | logloss | wAUC | params shared | params specific | params embedding | best epoch | '
      'epochs run | stopped early | train s | examples/s |',
      '|---|---|' + '---|' * (len(scen) + 11)]
  for r in rows:
    cells = [f"**{r[f'auc_{s}']}**" if best[s] == r['model'] else r[f'auc_{s}'] for s in scen]
    wauc = f"**{r['wauc']}**" if best_w == r['model'] else r['wauc']
    lines.append(f"| {r['model']} | {r['seeds']} | " + ' | '.join(cells) +
                 f" | {r['auc_overall']} | {r['logloss']} | {wauc} | {r['params_shared']} | {r['params_specific']} "
                 f"| {r['params_embedding']} | {r['best_epoch']:.1f} | {r['epochs']:.1f} | {r['stopped_early']} | "
                 f"{r['train_seconds']:.0f} | {r['examples_per_second']:.0f} |")
  if oracle:
    lines.append('| oracle | | ' + ' | '.join(f"{oracle['scenarios'][s]['auc']:.4f}" for s in scen) +
                 f" | {oracle['auc']:.4f} | {oracle['logloss']:.4f} | {oracle['wauc']:.4f} |" + ' |' * 8)
  lines += ['', 'Bold: the best mean in the column. The smallest scenario\'s test AUC rests on '
            f'{min(pos)} positives, so its std over seeds understates the sampling error '
            f'(about ±{0.5 / np.sqrt(max(min(pos), 1)):.2f} AUC).', '',
            '## MI-DPG against each baseline (paired by seed, test wAUC)', '']
  lines += _verdict(runs, rows) + ['']
  lines += [f'Failed (retried by the next run of the command): {name}: {error}' for name, error in failed.items()]
  jobs.write_table(ctx['out'], lines + [''], rows)
  if done == ctx['total']:
    print('\n'.join(lines), flush=True)
  return rows
