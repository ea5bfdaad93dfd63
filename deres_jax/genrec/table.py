"""The generative-retrieval table (issue 16): TIGER, RQ-KMeans, CAPSID(+SemanticBPE), COBRA-style, SASRec, ablations.

  python launch/reproduce.py --table=genrec --data=beauty --seeds=1 --workdir=/tmp/genrec_table

`--data` is beauty, sports or toys, read from `--data_path`/s3rec/ (default ../shared/data/amazon
beside the repository, i.e. /work/shared/data/amazon). `--preset` picks the budget (`PRESETS`;
default 'cpu_short', a reduced schedule that fits about 40 minutes of a shared 2-core machine,
never the papers' setting; 'cpu_long' is issue 28's platform table: SASRec and the two TIGER
rows only, at the configs' cpu_long budget) and `--max_minutes` (0 = no limit; negative = train nothing new, only
rewrite the table) stops starting new rows after that many minutes; rows not started are listed as
'not run'. Rerun the command to continue. `--latency_rounds` (default 5, 0 = off) re-measures the
decoding latency of every finished row back to back at the end (`latency.latency_pass`), because
latencies measured while each row ran saw different loads of a shared machine.

One run per (row, seed) in WORKDIR/<row>/seed<k> through the job runner (train/jobs.py); a run whose
summary.json exists is read back, not retrained. Rows that share a tokenizer (COBRA and TIGER
over RQ-VAE; CAPSID with and without SemanticBPE) copy the finished tokenizer/ directory of the
row named in `SHARE` when their tokenizer, feature and data configs are equal, so it is fitted
once (the retriever, BPE merges and everything after are the row's own). A run that raises is
reported as failed (its error in the table) and retried by the next rerun. Writes `out` (.md)
and a .csv beside it after every row (genrec/table_report.py: the popularity baseline on the same
test users, the CAPSID paper's R@10 beside ours, claims paired by seed when there are >= 2).
"""
import dataclasses
import json
import os
import shutil

from deres_jax.genrec import config as config_lib
from deres_jax.genrec import latency
from deres_jax.genrec import metrics
from deres_jax.genrec import table_report as report
from deres_jax.genrec.latency import COST_BEAM
from deres_jax.train import jobs
from deres_jax.train import ledger as ledger_lib
from deres_jax.train import workdir as workdir_lib

DATASETS = ('beauty', 'sports', 'toys')
OPTIONS = ('data_path', 'preset', 'max_minutes', 'latency_rounds', 'rows')  # launch/reproduce.py flags it takes
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(_ROOT, '..', 'shared', 'data', 'amazon'))


@dataclasses.dataclass(frozen=True)
class Row:
  key: str        # workdir name
  label: str      # table label
  config: str     # configs/genrec/<config>.py
  variant: str    # preset suffix ('' or an ablation: 'hard', 'iter1', 'fixed4', 'freq', ...)
  group: str      # 'main' | 'ablation' | 'sweep' (the paper's sensitivity points)


ROWS = (   # the rows the paper's claims need first, so a time limit drops ablations before them
    Row('tiger_rqvae', 'TIGER, RQ-VAE IDs', 'beauty_tiger_rqvae', '', 'main'),
    Row('capsid_bpe', 'CAPSID + SemanticBPE', 'beauty_capsid_bpe', '', 'main'),
    Row('cobra', 'COBRA-style (RQ-VAE IDs + dense vector, BeamFusion)', 'beauty_cobra', '', 'main'),
    Row('tiger_rqkmeans', 'TIGER, RQ-KMeans IDs', 'beauty_tiger_rqkmeans', '', 'main'),
    Row('sasrec', 'SASRec (full softmax)', 'beauty_sasrec', '', 'main'),
    Row('capsid', 'CAPSID (no BPE)', 'beauty_capsid', '', 'main'),
    Row('capsid_bpe_freq', 'CAPSID + frequency-only BPE (alpha = 1)', 'beauty_capsid_bpe', 'freq', 'ablation'),
    Row('capsid_bpe_keep0', 'CAPSID + SemanticBPE, first token merged too', 'beauty_capsid_bpe', 'keep0', 'ablation'),
    Row('capsid_hard', 'CAPSID + SemanticBPE, hard-winner residual', 'beauty_capsid_bpe', 'hard', 'ablation'),
    Row('capsid_iter1', 'CAPSID + SemanticBPE, T = 1', 'beauty_capsid_bpe', 'iter1', 'ablation'),
    Row('capsid_fixed4', 'CAPSID + SemanticBPE, fixed length 4', 'beauty_capsid_bpe', 'fixed4', 'ablation'),
    Row('capsid_fixed2', 'CAPSID + SemanticBPE, fixed length 2', 'beauty_capsid_bpe', 'fixed2', 'ablation'),
    Row('capsid_nospread', 'CAPSID + SemanticBPE, no spread loss', 'beauty_capsid_bpe', 'nospread', 'ablation'),
    # Ours, not a paper ablation: sharper init routing from layer 4 and length weight 1.0, IDs
    # closer to the paper's length (results/capsid_tokenizer_beauty.md: routed 4.48 -> 3.88).
    Row('capsid_bpe_deep32len', 'CAPSID + SemanticBPE, shorter IDs (ours: deep32len)', 'beauty_capsid_bpe',
        'deep32len', 'ablation'),
    # The paper's sensitivity sweeps (research/capsid.md §9.4); the default point is the
    # capsid_bpe row (T = 3, L_max = 6, tau = 0.82) and T = 1 the capsid_iter1 ablation.
    Row('capsid_T2', 'CAPSID + SemanticBPE, T = 2', 'beauty_capsid_bpe', 'T2', 'sweep'),
    Row('capsid_T5', 'CAPSID + SemanticBPE, T = 5', 'beauty_capsid_bpe', 'T5', 'sweep'),
    Row('capsid_lmax4', 'CAPSID + SemanticBPE, L_max = 4', 'beauty_capsid_bpe', 'lmax4', 'sweep'),
    Row('capsid_lmax8', 'CAPSID + SemanticBPE, L_max = 8', 'beauty_capsid_bpe', 'lmax8', 'sweep'),
    Row('capsid_tau0.75', 'CAPSID + SemanticBPE, tau = 0.75', 'beauty_capsid_bpe', 'tau0.75', 'sweep'),
    Row('capsid_tau0.90', 'CAPSID + SemanticBPE, tau = 0.90', 'beauty_capsid_bpe', 'tau0.90', 'sweep'),
)
# row -> the row whose finished tokenizer it copies (listed earlier in ROWS, so it runs first).
SHARE = {'cobra': 'tiger_rqvae', 'capsid': 'capsid_bpe', 'capsid_bpe_freq': 'capsid_bpe',
         'capsid_bpe_keep0': 'capsid_bpe'}

# Table presets: the configs' preset ('base'), then overrides for the generative rows and for
# SASRec, and the CAPSID tokenizer's steps. Every system decodes test users in batches of 256
# (the latency column's batch size).
PRESETS = {
    'cpu': {'base': 'cpu', 'generative': {}, 'sasrec': {'eval.batch_size': 256}, 'capsid_steps': 0},
    # REDUCED: 400 retriever steps of 128 windows (about 0.4 epoch of Beauty), RQ-VAE 400 and CAPSID
    # 150 tokenizer steps, validation once on 500 users, test on a fixed draw of 4,000 users.
    'cpu_short': {'base': 'cpu', 'capsid_steps': 150,
                  'generative': {'train.num_steps': 400, 'eval.every_steps': 400, 'ckpt.every_steps': 200,
                                 'eval.num_val_users': 500, 'eval.num_test_users': 4000, 'tokenizer.steps': 400},
                  'sasrec': {'train.num_steps': 1200, 'eval.every_steps': 1200, 'ckpt.every_steps': 600,
                             'eval.num_val_users': 500, 'eval.num_test_users': 4000, 'eval.batch_size': 256}},
    # Issue 28's platform table: SASRec and TIGER over RQ-VAE and RQ-KMeans IDs at the configs'
    # `cpu_long` budget (TIGER 20,000 steps of 128 sub-sequence windows, SASRec the same number of
    # targets), every test user; only these rows. About 1-1.5 h per run on 2 cores.
    'cpu_long': {'base': 'cpu_long', 'generative': {}, 'sasrec': {'eval.batch_size': 256}, 'capsid_steps': 0,
                 'rows': ('tiger_rqvae', 'tiger_rqkmeans', 'sasrec')},
    # CAPSID at the same cpu_long retriever budget as the platform rows (their runs read back from
    # the platform table's ledger when the configs match), to test CAPSID against TIGER trained to the
    # same number of windows rather than at cpu_short's 0.4 epoch.
    'cpu_long_capsid': {'base': 'cpu_long', 'generative': {}, 'sasrec': {'eval.batch_size': 256}, 'capsid_steps': 0,
                        'rows': ('tiger_rqvae', 'capsid_bpe', 'tiger_rqkmeans', 'sasrec', 'capsid')},
    'tiny': {'base': 'tiny', 'generative': {}, 'sasrec': {}, 'capsid_steps': 0},   # tests
}
METRICS = report.METRICS


def preset_rows(preset: str) -> tuple:
  """The rows a table preset has (every row unless the preset names its own)."""
  if preset not in PRESETS:
    raise ValueError(f'--preset={preset!r} is not a genrec table preset; choose one of {sorted(PRESETS)}.')
  keep = PRESETS[preset].get('rows')
  return tuple(r for r in ROWS if keep is None or r.key in keep)


def popularity(data: str, data_dir: str, num_test_users: int) -> dict:
  """The popularity baseline's test metrics on the table's test users (no training)."""
  from deres_jax.genrec import data as data_lib  # pylint: disable=g-import-not-at-top
  d = data_lib.load(data_dir, data)
  users = metrics.user_draw(len(d.users), num_test_users, 0)
  target = d.test_target[users]
  return metrics.evaluate(metrics.popularity_ranks(d.train_count, target), target, metrics.tail_items(d.train_count))


def _load_config(name: str, arg: str):
  return config_lib.ctr_config.load_file(os.path.join(_ROOT, 'configs', 'genrec', f'{name}.py'), arg)


def table_config(row: Row, data: str, seed: int, preset: str, data_dir: str):
  """The config of one (row, seed): the row's config file at the preset's base, then its overrides."""
  if preset not in PRESETS:
    raise ValueError(f'--preset={preset!r} is not a genrec table preset; choose one of {sorted(PRESETS)}.')
  p = PRESETS[preset]
  c = _load_config(row.config, p['base'] + (f'_{row.variant}' if row.variant else ''))
  c.data.dataset, c.seed = data, seed
  if data_dir:
    c.data.path = data_dir
  for key, value in p['sasrec' if c.system == 'sasrec' else 'generative'].items():
    section, field = key.split('.')
    c[section][field] = value
  if p['capsid_steps'] and c.system != 'sasrec' and c.tokenizer.name == 'capsid':
    c.tokenizer.steps = p['capsid_steps']
  return config_lib.validate(c)


def _reused(job_dir: str) -> str:
  try:
    with open(os.path.join(job_dir, 'table_row.json')) as f:
      return json.load(f).get('reused', '')
  except (OSError, ValueError):
    return ''


def run_row(config, workdir: str, dataset=None, devices=None) -> dict:
  """Trains and evaluates one run (the job runner's train_fn; tests pass a fake)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top  (JAX only when a row runs)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO
  return trainer.train_and_evaluate(config, workdir, dataset=dataset, devices=devices)


def _same_tokenizer(a, b) -> bool:
  keys = ('tokenizer', 'features', 'data', 'seed')
  return all((a[k].to_dict() if hasattr(a[k], 'to_dict') else a[k]) ==
             (b[k].to_dict() if hasattr(b[k], 'to_dict') else b[k]) for k in keys)


def _share_tokenizer(row, seed, config, configs, workdir) -> str:
  """Copies the finished tokenizer of SHARE[row] into this run's workdir; returns a note."""
  src_key = SHARE.get(row.key)
  dst = os.path.join(workdir, row.key, f'seed{seed}', 'tokenizer')
  if src_key is None or os.path.exists(os.path.join(dst, 'sids.npz')):
    return ''
  src = os.path.join(workdir, src_key, f'seed{seed}', 'tokenizer')
  if not os.path.exists(os.path.join(src, 'sids.npz')) or not _same_tokenizer(config, configs[src_key]):
    return ''
  os.makedirs(dst, exist_ok=True)
  for name in os.listdir(src):
    if name != 'bpe.npz':   # BPE merges belong to the row (lambda differs between rows)
      shutil.copy2(os.path.join(src, name), os.path.join(dst, name))
  return f'tokenizer of {src_key}'


def run_table(data: str, seeds: int, workdir: str, out: str, preset: str = 'cpu_short',
              data_path: str = '', max_minutes: float = 0.0, latency_rounds: int = 5,
              train_fn=None, rows: str = '') -> list:
  """Trains (or reads back) every row and seed; writes `out` (.md) and its .csv twin after each run.

  Args:
    data: 'beauty', 'sports' or 'toys'.
    seeds: seeds per row (0 .. seeds-1; mean ± std over them).
    workdir: one sub-directory per row and seed; finished runs are read back.
    out: the markdown file; the CSV goes beside it.
    preset: a key of `PRESETS` (the budget; `--preset`).
    data_path: holds s3rec/<Dataset>.txt ('' = DEFAULT_DATA_DIR; `--data_path`).
    max_minutes: start no new run after this many minutes (0 = no limit; < 0 = train nothing
      new, only rewrite the table; `--max_minutes`).
    latency_rounds: back-to-back decoding latency rounds at the end (0 = off; `--latency_rounds`).
    train_fn: the training function of one run (default `run_row`; tests pass a fake).
    rows: '' (all), or the row keys this run trains, comma-separated (`--rows`); the table lists
      every row, the others read back when finished, else 'not run'.
  Returns:
    The row dicts written to the CSV.
  """
  if data not in DATASETS:
    raise ValueError(f'--data={data!r} has no genrec table; choose one of {list(DATASETS)}.')
  if seeds < 1:
    raise ValueError(f'--seeds={seeds} must be at least 1.')
  table_rows = preset_rows(preset)
  chosen = {r.strip() for r in rows.split(',') if r.strip()}
  unknown = sorted(chosen - {r.key for r in table_rows})
  if unknown:
    raise ValueError(f'--rows: {unknown[0]!r} is not a row of the genrec table at --preset={preset}; its rows: '
                     + ', '.join(r.key for r in table_rows) + '.')
  data_dir = data_path or DEFAULT_DATA_DIR
  os.makedirs(workdir, exist_ok=True)
  configs = {r.key: [table_config(r, data, s, preset, data_dir) for s in range(seeds)] for r in table_rows}
  runs = {r.key: [None] * seeds for r in table_rows}   # summary dict, or {'failed': msg} / {'not_run': msg}
  first = configs[table_rows[0].key][0]
  ctx = dict(data=data, seeds=seeds, workdir=workdir, out=out, preset=preset, data_dir=data_dir,
             popularity=popularity(data, first.data.path, first.eval.num_test_users))
  by_name = {f'{r.key}/seed{s}': (r, s) for s in range(seeds) for r in table_rows}
  job_list = [jobs.Job(name, configs[r.key][s], f'{r.key} seed {s}') for name, (r, s) in by_name.items()]

  def share(job):  # copy a finished tokenizer in (SHARE) and note it beside the run
    row, seed = by_name[job.name]
    shared = _share_tokenizer(row, seed, job.config, {k: v[seed] for k, v in configs.items()}, workdir)
    os.makedirs(os.path.join(workdir, job.name), exist_ok=True)
    workdir_lib.write_json_atomic(os.path.join(workdir, job.name, 'table_row.json'), {'reused': shared})

  def record(result):
    row, seed = by_name[result.job.name]
    if result.summary is not None:
      runs[row.key][seed] = dict(result.summary, reused=_reused(os.path.join(workdir, result.job.name)))
    else:
      runs[row.key][seed] = {'failed' if result.status == 'failed' else 'not_run': result.error}
    report.write(report.rows(table_rows, runs), configs, ctx)

  jobs.run(job_list, workdir, train_fn or run_row, before=share, on_result=record,
           max_minutes=max_minutes, ledger=ledger_lib.beside(out),
           only=(lambda j: by_name[j.name][0].key in chosen) if chosen else None,
           describe=lambda s: f"test R@10 {s['test']['recall@10']:.4f}")
  stored = os.path.join(workdir, 'latency_back_to_back.json')
  timing = {'rounds': 0, 'ms_per_user': {}}
  if os.path.exists(stored):   # the last measurement (kept for rows not timed again)
    with open(stored) as f:
      timing = json.load(f)
  if latency_rounds > 0:
    # Only rows whose seed-0 weights are here: a run restored from the ledger has none.
    done = {k: (configs[k][0], os.path.join(workdir, k, 'seed0')) for k, v in runs.items()
            if v[0] is not None and 'test' in v[0] and latency.has_weights(os.path.join(workdir, k, 'seed0'))}
    ms = latency.latency_pass(done, latency_rounds, (0, COST_BEAM))
    if done or not timing['ms_per_user']:
      keep = timing.get('weights') == 'trained' and timing.get('rounds') == latency_rounds
      old = (timing['ms_per_user'], timing.get('ms_per_user_cost_beam', {})) if keep else ({}, {})
      timing = {'rounds': latency_rounds, 'ms_per_user': {**old[0], **ms[0]}, 'cost_beam': COST_BEAM,
                'weights': 'trained', 'ms_per_user_cost_beam': {**old[1], **ms[COST_BEAM]}}
      workdir_lib.write_json_atomic(stored, timing)
  rows = report.rows(table_rows, runs, timing['ms_per_user'], timing.get('ms_per_user_cost_beam'))
  report.write(rows, configs, dict(ctx, latency_rounds=timing['rounds'] if timing['ms_per_user'] else 0,
                             latency_weights=timing.get('weights', 'random')))   # files before 'weights': random
  return rows


