"""The generative-retrieval table (issue 16): TIGER, RQ-KMeans, CAPSID(+SemanticBPE), COBRA-style, SASRec, ablations.

  python launch/reproduce.py --table=genrec --data=beauty --seeds=1 --workdir=/tmp/genrec_table

`--data` is beauty, sports or toys, read from `--data_path`/s3rec/ (default ../shared/data/amazon
beside the repository, i.e. /work/shared/data/amazon). `--preset` picks the budget (`PRESETS`;
default 'cpu_short', a reduced schedule that fits about 40 minutes of a shared 2-core machine,
never the papers' setting) and `--max_minutes` (0 = no limit; negative = train nothing new, only
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
and a .csv beside it after every row.
"""
import dataclasses
import json
import os
import shutil

import numpy as np

from deres_jax.genrec import config as config_lib
from deres_jax.genrec import latency
from deres_jax.genrec.latency import COST_BEAM
from deres_jax.genrec.latency import PAPER_COST
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
  group: str      # 'main' | 'ablation'


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
    'tiny': {'base': 'tiny', 'generative': {}, 'sasrec': {}, 'capsid_steps': 0},   # tests
}


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
  chosen = {r.strip() for r in rows.split(',') if r.strip()}
  unknown = sorted(chosen - {r.key for r in ROWS})
  if unknown:
    raise ValueError(f'--rows: {unknown[0]!r} is not a genrec table row; its rows: '
                     + ', '.join(r.key for r in ROWS) + '.')
  data_dir = data_path or DEFAULT_DATA_DIR
  os.makedirs(workdir, exist_ok=True)
  configs = {r.key: [table_config(r, data, s, preset, data_dir) for s in range(seeds)] for r in ROWS}
  runs = {r.key: [None] * seeds for r in ROWS}   # summary dict, or {'failed': msg} / {'not_run': msg}
  ctx = dict(data=data, seeds=seeds, workdir=workdir, out=out, preset=preset, data_dir=data_dir)
  by_name = {f'{r.key}/seed{s}': (r, s) for s in range(seeds) for r in ROWS}
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
    _write(_rows(runs), configs, ctx)

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
  rows = _rows(runs, timing['ms_per_user'], timing.get('ms_per_user_cost_beam'))
  _write(rows, configs, dict(ctx, latency_rounds=timing['rounds'] if timing['ms_per_user'] else 0,
                             latency_weights=timing.get('weights', 'random')))   # files before 'weights': random
  return rows


METRICS = ('recall@5', 'ndcg@5', 'recall@10', 'ndcg@10', 'tail/recall@10', 'tail/ndcg@10', 'head/recall@10',
           'head/ndcg@10', 'tail/recall@5', 'tail/ndcg@5', 'head/recall@5', 'head/ndcg@5')


def _id_lengths(summary) -> tuple:
  """(mean ID length before BPE, tokens per item the retriever decodes)."""
  if summary.get('system') == 'sasrec':
    return 1.0, 1.0
  tokens = summary.get('mean_tokens_per_item', float('nan'))
  return summary.get('bpe', {}).get('tokens_per_item_before', tokens), tokens


def _rows(runs, latency=None, latency_cost_beam=None) -> list:
  latency, cost, rows = latency or {}, latency_cost_beam or {}, []
  for r in ROWS:
    done = [x for x in runs[r.key] if x is not None and 'test' in x]
    failed = [x['failed'] for x in runs[r.key] if x is not None and 'failed' in x]
    not_run = [x['not_run'] for x in runs[r.key] if x is not None and 'not_run' in x]
    row = {'key': r.key, 'system': r.label, 'group': r.group, 'seeds_done': len(done),
           'status': 'failed: ' + failed[0] if failed else 'not run: ' + not_run[0] if not_run else
           'done' if done and len(done) == len(runs[r.key]) else 'not run'}
    for m in METRICS:
      v = [x['test'][m] for x in done]
      row[m] = float(np.mean(v)) if v else float('nan')
      row[m + '_std'] = float(np.std(v, ddof=1)) if len(v) > 1 else float('nan')
    row['decode_ms_per_user'] = float(np.mean([x['decode_ms_per_user']['median'] for x in done])) if done else \
        float('nan')
    lengths = [_id_lengths(x) for x in done]
    row['decode_ms_back_to_back'] = latency.get(r.key, float('nan'))
    # decoding cost at the paper's beam relative to TIGER over RQ-VAE IDs, measured back to back
    row['cost_vs_tiger_beam50'] = (cost[r.key] / cost['tiger_rqvae'] if r.key in cost and cost.get('tiger_rqvae')
                                   else float('nan'))
    row['mean_id_length'] = float(np.mean([a for a, _ in lengths])) if done else float('nan')
    row['tokens_per_item'] = float(np.mean([b for _, b in lengths])) if done else float('nan')
    row['test_users'] = done[0]['test'].get('tail/users', 0) + done[0]['test'].get('head/users', 0) if done else 0
    row['train_seconds'] = float(np.mean([x.get('train_seconds', float('nan')) for x in done])) if done else \
        float('nan')
    row['num_params'] = done[0].get('num_params', 0) if done else 0
    row['reused'] = done[0].get('reused', '') if done else ''
    rows.append(row)
  return rows


def _cell(row, m):
  if row['status'] != 'done' and not row['seeds_done']:
    return '–'
  s = f'{row[m]:.4f}'
  return s + (f' ± {row[m + "_std"]:.4f}' if np.isfinite(row.get(m + '_std', float('nan'))) else '')


def _claims(rows) -> list:
  """Claim by claim, what this table shows (the CAPSID abstract's claims, issue 16)."""
  by = {r['key']: r for r in rows}
  ok = lambda *k: all(by[x]['seeds_done'] for x in k)

  def se(p, n):  # binomial standard error of a recall over n users
    return float(np.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)))

  def compare(a, b, m='recall@10', users='test_users'):
    ra, rb = by[a], by[b]
    n_a = ra[users] if users == 'test_users' else ra['test_users']
    noise = 2 * np.hypot(se(ra[m], n_a), se(rb[m], n_a))
    if abs(ra[m] - rb[m]) < noise:  # the direction alone is no evidence
      verdict = ('not established (' + ('higher' if ra[m] > rb[m] else 'not higher')
                 + ', within 2 binomial standard errors)')
    else:
      verdict = 'holds' if ra[m] > rb[m] else 'does not hold'
    return f'{ra[m]:.4f} vs {rb[m]:.4f}: {verdict}'

  out = []
  if ok('capsid_bpe', 'tiger_rqvae'):
    out.append(f"* CAPSID+SemanticBPE R@10 above TIGER-RQ-VAE: {compare('capsid_bpe', 'tiger_rqvae')}.")
  if ok('capsid_bpe', 'tiger_rqkmeans'):
    out.append(f"* CAPSID+SemanticBPE R@10 above TIGER-RQ-KMeans: {compare('capsid_bpe', 'tiger_rqkmeans')}.")
  if ok('capsid_bpe', 'cobra'):
    a, b = by['capsid_bpe'], by['cobra']
    geq = 'holds' if a['recall@10'] >= b['recall@10'] else 'does not hold'
    col, how = (('decode_ms_back_to_back', 'back to back') if np.isfinite(a['decode_ms_back_to_back']) and
                np.isfinite(b['decode_ms_back_to_back']) else ('decode_ms_per_user', 'during each run'))
    faster = 'holds' if a[col] < b[col] else 'does not hold'
    out.append(f"* CAPSID+SemanticBPE R@10 >= COBRA-style: {a['recall@10']:.4f} vs {b['recall@10']:.4f}: {geq}; "
               f"at lower decoding latency ({how}): {a[col]:.2f} vs {b[col]:.2f} ms/user "
               f"({a[col] / max(b[col], 1e-9):.0%} of COBRA-style; paper: 51%): {faster}.")
  if ok('capsid_bpe', 'tiger_rqvae', 'cobra') and np.isfinite(by['capsid_bpe']['cost_vs_tiger_beam50']):
    a, b = by['capsid_bpe']['cost_vs_tiger_beam50'], by['cobra']['cost_vs_tiger_beam50']
    out.append(f'* Decoding cost at beam {COST_BEAM} relative to TIGER-RQ-VAE (back to back): CAPSID+SemanticBPE '
               f'{a:.2f}x (paper {PAPER_COST["capsid_bpe"]:.2f}x), COBRA-style {b:.2f}x (paper '
               f'{PAPER_COST["cobra"]:.2f}x); CAPSID+SemanticBPE cheaper than COBRA-style: '
               f'{"holds" if a < b else "does not hold"}.')
  if ok('capsid_bpe', 'tiger_rqvae'):
    a, b = by['capsid_bpe'], by['tiger_rqvae']
    rel = lambda m: (a[m] - b[m]) / b[m] if b[m] > 0 else (float('inf') if a[m] > 0 else float('nan'))
    t, h = rel('tail/recall@10'), rel('head/recall@10')
    verdict = 'holds' if np.isfinite(h) and (t > h or (np.isinf(t) and t > 0)) else 'does not hold'
    if a['tail/recall@10'] == 0 and b['tail/recall@10'] == 0:
      verdict = 'cannot be judged (no tail hits for either system)'
    pct = lambda x: f'{x:+.0%}' if np.isfinite(x) else 'n/a'
    out.append(f"* Gains over TIGER-RQ-VAE largest on tail items: tail R@10 {a['tail/recall@10']:.4f} vs "
               f"{b['tail/recall@10']:.4f} (relative {pct(t)}), head {a['head/recall@10']:.4f} vs "
               f"{b['head/recall@10']:.4f} (relative {pct(h)}): {verdict}.")
  for k, what in (('capsid_hard', 'soft residual'), ('capsid_iter1', 'iterative agreement'),
                  ('capsid_fixed4', 'confidence-driven length (vs fixed 4)'),
                  ('capsid_fixed2', 'confidence-driven length (vs fixed 2)'), ('capsid_nospread', 'the spread loss')):
    if ok('capsid_bpe', k):
      out.append(f"* {what} helps (CAPSID+SemanticBPE vs {by[k]['system']}, R@10): {compare('capsid_bpe', k)}.")
  if ok('capsid_bpe', 'capsid_bpe_freq'):
    out.append('* Embedding compatibility helps BPE (alpha 0.6 vs 1, R@10): '
               f"{compare('capsid_bpe', 'capsid_bpe_freq')}.")
  return out or ['* No claim can be checked yet: the rows it needs have not finished.']


def _write(rows, configs, ctx):
  out, seeds = ctx['out'], ctx['seeds']
  cmd = (f"python launch/reproduce.py --table=genrec --data={ctx['data']} --seeds={seeds} "
         f"--workdir={ctx['workdir']} --preset={ctx['preset']}")
  cfg = configs['tiger_rqvae'][0]
  users = max((r['test_users'] for r in rows), default=0)
  preset = ctx['preset']
  lines = [
      f'<!-- produced by: {cmd} -->',
      f"# Generative retrieval on Amazon 2014 {ctx['data'].capitalize()} (issue 16; table preset `{preset}`)", '',
      f'Command: `{cmd}` (data directory `{ctx["data_dir"]}`, seeds 0..{seeds - 1}).',
      '',
      f'Preset `{preset}`' + (' is a REDUCED schedule chosen to fit a shared 2-core CPU budget, not the papers\' '
                              'setting' if preset != 'cpu' else ' is the configs\' cpu schedule') +
      f': retriever {cfg.model.enc_depth}+{cfg.model.dec_depth} layers of width {cfg.model.width}, '
      f'{cfg.train.num_steps} steps of {cfg.train.batch_size} windows; tokenizer steps (RQ-VAE) '
      f'{cfg.tokenizer.steps}, CAPSID {configs["capsid"][0].tokenizer.steps}; SASRec '
      f'{configs["sasrec"][0].train.num_steps} steps. Validation R@10 on {cfg.eval.num_val_users or "all"} users '
      f'picks the parameters; test on {users} users (a fixed draw, the same for every row) of the leave-one-out '
      f'split, full catalogue. Item content for every tokenizer: `{cfg.features.source}` (attribute ids and '
      'training-part co-occurrence; no item text exists here). Tail = least popular 20 % of items by training '
      f'count. Decoding latency: median ms per user at batch {cfg.eval.batch_size} for every system, beam '
      f'{cfg.eval.beam_size} (SASRec scores all items); the machine is shared, so latencies are comparable only '
      'within one run of the table.', '',
      (f"Decoding latency back to back: {ctx['latency_rounds']} rounds of one batch of {cfg.eval.batch_size} "
       f"users per system, the systems alternating, each row's {ctx.get('latency_weights', 'trained')} weights "
       "(seed 0) over its own tokenizer, trie and BPE (`genrec/latency.py`; the beam search stops when every beam "
       'has ended, so with '
       f'variable-length IDs the cost depends on the weights). The same pass at beam {COST_BEAM} gives the '
       f'cost column: ms/user at beam {COST_BEAM} relative to TIGER over RQ-VAE IDs (the paper\'s comparison; '
       'its figure in brackets).' if ctx.get('latency_rounds') else
       'Decoding latency back to back: not measured in this run (only in-run medians).'), '',
      '| system | R@5 | N@5 | R@10 | N@10 | tail R@10 | tail N@10 | head R@10 | head N@10 | decode ms/user (in run) | '
      f'decode ms/user (back to back) | cost at beam {COST_BEAM} vs TIGER [paper] | mean ID length | '
      'tokens per item | train s | status |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
  for group in ('main', 'ablation'):
    if group == 'ablation':
      lines.append('| **ablations** |' + ' |' * 15)
    for r in (r for r in rows if r['group'] == group):
      done = r['seeds_done'] > 0
      num = lambda v, f: f.format(v) if done and np.isfinite(v) else '–'
      lines.append(f"| {r['system']} | " + ' | '.join(_cell(r, m) for m in METRICS[:8]) +
                   f" | {num(r['decode_ms_per_user'], '{:.2f}')} | {num(r['decode_ms_back_to_back'], '{:.2f}')}"
                   f" | {num(r['cost_vs_tiger_beam50'], '{:.2f}x')}"
                   + (f" [{PAPER_COST[r['key']]:.2f}x]" if r['key'] in PAPER_COST else '') +
                   f" | {num(r['mean_id_length'], '{:.2f}')} | "
                   f"{num(r['tokens_per_item'], '{:.2f}')} | {num(r['train_seconds'], '{:.0f}')} | {r['status']}"
                   + (f" (reused the {r['reused']})" if r['reused'] else '') + ' |')
  lines += ['', '## What holds here', ''] + _claims(rows) + [
      '', 'Standard errors are binomial over the test users of one seed; with one seed the seed-to-seed spread '
      'is not measured. "Mean ID length" counts semantic-ID tokens before SemanticBPE; "tokens per item" is what '
      'the retriever decodes (after BPE).', '']
  jobs.write_table(out, lines, rows)
