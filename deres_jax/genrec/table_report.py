"""The genrec table's report (genrec/table.py): rows aggregated over seeds, the claims, the markdown.

Claims compare Recall@10 of two rows. With two or more seeds run for both, the comparison is
paired by seed (the paper's protocol: 3 seeds, a paired t-test): the mean per-seed difference
with its 95 % t interval, "holds" when the interval lies above 0, "does not hold" when below,
"not resolved" otherwise. With one seed it falls back to two binomial standard errors of the
difference over the test users (the direction alone is no evidence).
"""
import numpy as np

from deres_jax.genrec.latency import COST_BEAM
from deres_jax.genrec.latency import PAPER_COST
from deres_jax.train import jobs
from deres_jax.train.paper_table import paired_gain
from deres_jax.train.paper_table import partial_note

# The CAPSID paper's Recall@10 (research/capsid.md §9.4; its TIGER row is TIGER's own paper and
# its COBRA row COBRA's sparse+dense model); the ablations are reported on Beauty only.
PAPER_R10 = {
    'beauty': {'tiger_rqvae': 0.0648, 'cobra': 0.0725, 'capsid': 0.0808, 'capsid_bpe': 0.0839,
               'capsid_bpe_freq': 0.0817, 'capsid_hard': 0.0702, 'capsid_iter1': 0.0731,
               'capsid_fixed4': 0.0765, 'capsid_fixed2': 0.0658, 'capsid_nospread': 0.0770,
               'capsid_T2': 0.0789, 'capsid_T5': 0.0841, 'capsid_lmax4': 0.0806, 'capsid_lmax8': 0.0837,
               'capsid_tau0.75': 0.0817, 'capsid_tau0.90': 0.0821},
    'sports': {'tiger_rqvae': 0.0400, 'cobra': 0.0434, 'capsid': 0.0507, 'capsid_bpe': 0.0527},
    'toys': {'tiger_rqvae': 0.0712, 'cobra': 0.0781, 'capsid': 0.0803, 'capsid_bpe': 0.0855},
}

METRICS = ('recall@5', 'ndcg@5', 'recall@10', 'ndcg@10', 'tail/recall@10', 'tail/ndcg@10', 'head/recall@10',
           'head/ndcg@10', 'tail/recall@5', 'tail/ndcg@5', 'head/recall@5', 'head/ndcg@5')


def _id_lengths(summary) -> tuple:
  """(mean ID length before BPE, tokens per item the retriever decodes)."""
  if summary.get('system') == 'sasrec':
    return 1.0, 1.0
  tokens = summary.get('mean_tokens_per_item', float('nan'))
  return summary.get('bpe', {}).get('tokens_per_item_before', tokens), tokens


def rows(table_rows, runs, latency=None, latency_cost_beam=None) -> list:
  """One dict per table row (mean and std over its finished seeds; per-seed R@10 for pairing)."""
  latency, cost, out = latency or {}, latency_cost_beam or {}, []
  for r in table_rows:
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
    row['tail_users'] = done[0]['test'].get('tail/users', 0) if done else 0
    row['train_seconds'] = float(np.mean([x.get('train_seconds', float('nan')) for x in done])) if done else \
        float('nan')
    row['num_params'] = done[0].get('num_params', 0) if done else 0
    row['reused'] = done[0].get('reused', '') if done else ''
    row.update(_diagnostics(done))
    row['recall@10_by_seed'] = [x['test']['recall@10'] if x is not None and 'test' in x else None
                                for x in runs[r.key]]
    row['mean_id_length_by_seed'] = [_id_lengths(x)[0] if x is not None and 'test' in x else None
                                     for x in runs[r.key]]
    out.append(row)
  return out


DIAGNOSTICS = ('collision_rate', 'utilisation', 'gini', 'intra_code_similarity', 'stop_confidence', 'stop_residual',
               'stop_cap', 'cold/recall@10', 'pop_head/recall@10', 'pop_torso/recall@10', 'pop_tail/recall@10')


def _diagnostics(done) -> dict:
  """Seed means of the tokenizer diagnostics (tokenizer_stats.py) and the popularity slices of R@10
  (NaN where a run lacks them: SASRec has no tokenizer, a fixed-length tokenizer no stop rule)."""
  def value(x, key):
    if '/' in key:
      return x['test'].get(key, float('nan'))
    tok = x.get('tokenizer') or {}
    tok = tok.get('diagnostics', tok) if isinstance(tok, dict) else {}
    if key.startswith('stop_'):
      return (tok.get('stop_rule_share') or {}).get(key[5:], float('nan'))
    return tok.get(key, float('nan'))
  return {k: float(np.mean([value(x, k) for x in done])) if done else float('nan') for k in DIAGNOSTICS}


def diagnostics_table(rows) -> list:
  """Markdown lines of the second table: tokenizer diagnostics and R@10 by item popularity."""
  pct = lambda v: f'{100 * v:.1f} %' if np.isfinite(v) else '–'
  num = lambda v, f='{:.4f}': f.format(v) if np.isfinite(v) else '–'
  lines = ['', '### Tokenizer diagnostics and Recall@10 by item popularity', '',
           'Seed means (genrec/tokenizer_stats.py). Collision: share of items whose ID another item shares '
           '(before the disambiguation token); utilisation: share of each level\'s codes used; Gini of code '
           'usage; intra-code similarity: mean cosine of two items sharing a first-level code; stop rule: '
           'which of the CAPSID rules ended the ID (confidence, residual, the '
           'L_max cap); cold: targets with fewer than 5 training interactions; head/torso/tail: popularity '
           'thirds of the catalogue. Paper (Beauty): CAPSID 13.4 % / 55.1 % / 0.23 / 0.728, '
           'RQ-KMeans 72.5 % / 47.2 % / 0.69 / 0.701; cold R@10 TIGER 0.0371, CAPSID+SemanticBPE 0.0620.', '',
           '| system | collision | utilisation | Gini | intra-code sim. | stop: confidence / residual / cap | '
           'cold R@10 | head R@10 | torso R@10 | tail R@10 |', '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|']
  for r in rows:
    if not r['seeds_done']:
      continue
    stop = ' / '.join(pct(r[k]) for k in ('stop_confidence', 'stop_residual', 'stop_cap'))
    lines.append(f"| {r['system']} | {pct(r['collision_rate'])} | {pct(r['utilisation'])} | "
                 f"{num(r['gini'], '{:.2f}')} | {num(r['intra_code_similarity'], '{:.3f}')} | "
                 f"{stop if np.isfinite(r['stop_confidence']) else '–'} | " +
                 ' | '.join(num(r[k]) for k in DIAGNOSTICS[7:]) + ' |')
  return lines


def cell(row, m):
  if row['status'] != 'done' and not row['seeds_done']:
    return '–'
  s = f'{row[m]:.4f}'
  return s + (f' ± {row[m + "_std"]:.4f}' if np.isfinite(row.get(m + '_std', float('nan'))) else '')


MIN_TAIL_HITS = 20   # tail hits (summed over seeds) either system needs before the tail claim is judged


def claims(rows) -> list:
  """Claim by claim, what this table shows (the CAPSID abstract's claims, issue 16)."""
  by = {r['key']: r for r in rows}
  ok = lambda *k: all(x in by and by[x]['seeds_done'] for x in k)

  def se(p, n):  # binomial standard error of a recall over n users
    return float(np.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)))

  def compare(a, b):
    """R@10 of row a against row b: paired by seed when both have >= 2 common seeds."""
    ra, rb = by[a], by[b]
    seeds_a, seeds_b = ra['recall@10_by_seed'], rb['recall@10_by_seed']
    common = [i for i, (x, y) in enumerate(zip(seeds_a, seeds_b)) if x is not None and y is not None]
    pairs = [(seeds_a[i], seeds_b[i]) for i in common]
    if len(pairs) >= 2:
      mean, half = paired_gain([x for x, _ in pairs], [y for _, y in pairs])
      lo, hi = mean - half, mean + half
      verdict = 'holds' if lo > 0 else 'does not hold' if hi < 0 else 'not resolved (the interval contains 0)'
      return (f'{np.mean([x for x, _ in pairs]):.4f} vs {np.mean([y for _, y in pairs]):.4f}, paired over '
              f'{len(pairs)} seeds {mean:+.4f} [{lo:+.4f}, {hi:+.4f}]: {verdict}')
    m = 'recall@10'
    # One common seed: compare on it (a row's mean over more seeds is not paired with the other's one).
    a, b = pairs[0] if pairs else (ra[m], rb[m])
    noise = 2 * np.hypot(se(a, ra['test_users']), se(b, ra['test_users']))
    if abs(a - b) < noise:  # the direction alone is no evidence
      verdict = ('not established (' + ('higher' if a > b else 'not higher')
                 + ', within 2 binomial standard errors)')
    else:
      verdict = 'holds' if a > b else 'does not hold'
    several = sum(x is not None for x in seeds_a + seeds_b) > 2
    on = f' (seed {common[0]}, the one seed both have)' if common and several else ''
    return f'{a:.4f} vs {b:.4f}{on}: {verdict}'

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
    hits = [round(r['tail/recall@10'] * r['tail_users'] * r['seeds_done']) for r in (a, b)]
    if max(hits) < MIN_TAIL_HITS:   # a relative gain over a handful of hits is noise
      verdict = (f'cannot be judged (too few tail hits: {hits[0]} and {hits[1]} over all seeds, '
                 f'fewer than {MIN_TAIL_HITS})')
    pct = lambda x: f'{x:+.0%}' if np.isfinite(x) else 'n/a'
    out.append(f"* Gains over TIGER-RQ-VAE largest on tail items: tail R@10 {a['tail/recall@10']:.4f} vs "
               f"{b['tail/recall@10']:.4f} (relative {pct(t)}), head {a['head/recall@10']:.4f} vs "
               f"{b['head/recall@10']:.4f} (relative {pct(h)}): {verdict}.")
  for k, what in (('capsid', 'SemanticBPE (vs CAPSID without it)'), ('capsid_hard', 'soft residual'),
                  ('capsid_iter1', 'iterative agreement'),
                  ('capsid_fixed4', 'confidence-driven length (vs fixed 4)'),
                  ('capsid_fixed2', 'confidence-driven length (vs fixed 2)'), ('capsid_nospread', 'the spread loss')):
    if ok('capsid_bpe', k):
      out.append(f"* {what} helps (CAPSID+SemanticBPE vs {by[k]['system']}, R@10): {compare('capsid_bpe', k)}.")
  if ok('capsid_bpe', 'capsid_bpe_freq'):
    out.append('* Embedding compatibility helps BPE (alpha 0.6 vs 1, R@10): '
               f"{compare('capsid_bpe', 'capsid_bpe_freq')}.")
  out += _sweeps(by, ok)
  # The platform rows (issue 28): what the TIGER and GRID papers report about them.
  if ok('tiger_rqvae', 'sasrec'):
    out.append('* TIGER-RQ-VAE R@10 above SASRec (the TIGER paper\'s claim; a tuned SASRec is above TIGER in later '
               f"work, research/capsid.md): {compare('tiger_rqvae', 'sasrec')}.")
  if ok('tiger_rqkmeans', 'tiger_rqvae'):
    out.append('* RQ-KMeans IDs above RQ-VAE IDs under the same retriever (GRID\'s finding): '
               f"{compare('tiger_rqkmeans', 'tiger_rqvae')}.")
  if not any(k.startswith('capsid') or k == 'cobra' for k in by):
    out.append('* This preset has no CAPSID or COBRA row, so the CAPSID paper\'s claims are not checked here.')
  return out or ['* No claim can be checked yet: the rows it needs have not finished.']


# (parameter, [(value, row key)]): the sensitivity points, the default one being capsid_bpe.
SWEEPS = (('T', [('1', 'capsid_iter1'), ('2', 'capsid_T2'), ('3', 'capsid_bpe'), ('5', 'capsid_T5')]),
          ('L_max', [('4', 'capsid_lmax4'), ('6', 'capsid_bpe'), ('8', 'capsid_lmax8')]),
          ('tau', [('0.75', 'capsid_tau0.75'), ('0.82', 'capsid_bpe'), ('0.90', 'capsid_tau0.90')]))


def _sweeps(by, ok) -> list:
  """One line per sensitivity sweep with any finished point besides the default: R@10 and mean
  ID length at each point, the paper's Beauty R@10 beside it (descriptive: one seed per point
  moves by about 0.005, so no verdict)."""
  paper, out = PAPER_R10['beauty'], []
  for name, points in SWEEPS:
    done = [(v, k) for v, k in points if ok(k)]
    # Every point over the same seeds (a sweep row usually has fewer than the default row).
    seeds = [i for i in range(min(len(by[k]['recall@10_by_seed']) for _, k in done) if done else 0)
             if all(by[k]['recall@10_by_seed'][i] is not None for _, k in done)]
    if len(done) < 2 or not seeds:
      continue
    r10 = {k: float(np.mean([by[k]['recall@10_by_seed'][i] for i in seeds])) for _, k in done}
    length = {k: float(np.mean([by[k]['mean_id_length_by_seed'][i] for i in seeds])) for _, k in done}
    cells = [f"{v} -> {r10[k]:.4f} (length {length[k]:.2f}"
             + (f", paper {paper[k]:.4f})" if k in paper else ')') for v, k in done]
    out.append(f"* Sensitivity to {name} (R@10, seed{'s' if len(seeds) > 1 else ''} "
               f"{', '.join(map(str, seeds))} of every point): " + '; '.join(cells) + '.')
  return out


def write(rows, configs, ctx, popularity=None):
  out, seeds = ctx['out'], ctx['seeds']
  cmd = (f"python launch/reproduce.py --table=genrec --data={ctx['data']} --seeds={seeds} "
         f"--workdir={ctx['workdir']} --preset={ctx['preset']} --out={out}")
  cfg = next(c[0] for c in configs.values() if c[0].system != 'sasrec')
  def steps(key, what):
    if key not in configs:
      return 'n/a (row not in this preset)'
    c = configs[key][0]
    return c.train.num_steps if what == 'train' else c.tokenizer.steps
  paper = PAPER_R10.get(ctx['data'], {})
  pop = ctx.get('popularity')
  users = max([r['test_users'] for r in rows] + ([pop['tail/users'] + pop['head/users']] if pop else []))
  preset = ctx['preset']
  missing = [r for r in rows if r['status'] != 'done']
  partly = [f"{r['key']} {r['seeds_done']}/{seeds}" for r in missing if r['seeds_done']]
  partial = partial_note(len(rows) - len(missing), len(rows),
                         (f"partly done: {', '.join(partly)}; " if partly else '')
                         + 'the status column says why the others are missing')
  lines = [
      f'<!-- produced by: {cmd}{partial} -->',
      f"# Generative retrieval on Amazon 2014 {ctx['data'].capitalize()} (genrec table, preset `{preset}`)", '',
      f'Command: `{cmd}` (data directory `{ctx["data_dir"]}`, seeds 0..{seeds - 1}).',
      '',
      f'Preset `{preset}`' + (' is a REDUCED schedule chosen to fit a shared 2-core CPU budget, not the papers\' '
                              'setting' if preset != 'cpu' else ' is the configs\' cpu schedule') +
      f': retriever {cfg.model.enc_depth}+{cfg.model.dec_depth} layers of width {cfg.model.width}, '
      f'{cfg.train.num_steps} steps of {cfg.train.batch_size} windows; tokenizer steps (RQ-VAE) '
      f'{cfg.tokenizer.steps}, CAPSID {steps("capsid", "tokenizer")}; SASRec '
      f'{steps("sasrec", "train")} steps. Validation R@10 on {cfg.eval.num_val_users or "all"} users '
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
      'Paper R@10: the CAPSID paper\'s Table (research/capsid.md §9.4: full-size generators, 3 seeds, beam 50, '
      'Sentence-T5 item text; its TIGER row is TIGER\'s own paper); our rows are reduced models on attribute '
      'features, so only the ordering of rows is comparable.', '',
      '| system | paper R@10 | R@5 | N@5 | R@10 | N@10 | tail R@10 | tail N@10 | head R@10 | head N@10 | '
      'decode ms/user (in run) | '
      f'decode ms/user (back to back) | cost at beam {COST_BEAM} vs TIGER [paper] | mean ID length | '
      'tokens per item | train s | status |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|']
  if pop:   # no training: the same test users ranked by training count
    lines.append('| Popularity (training counts, ties by lower id) | – | ' + ' | '.join(
        f'{pop[m]:.4f}' for m in METRICS[:8]) + ' | – | – | – | – | – | 0 | computed |')
  for group in ('main', 'ablation', 'sweep'):
    if group != 'main' and any(r['group'] == group for r in rows):
      lines.append(f"| **{'ablations' if group == 'ablation' else 'sensitivity (T, L_max, tau)'}** |" + ' |' * 16)
    for r in (r for r in rows if r['group'] == group):
      done = r['seeds_done'] > 0
      num = lambda v, f: f.format(v) if done and np.isfinite(v) else '–'
      lines.append(f"| {r['system']} | " + (f"{paper[r['key']]:.4f} | " if r['key'] in paper else '– | ')
                   + ' | '.join(cell(r, m) for m in METRICS[:8]) +
                   f" | {num(r['decode_ms_per_user'], '{:.2f}')} | {num(r['decode_ms_back_to_back'], '{:.2f}')}"
                   f" | {num(r['cost_vs_tiger_beam50'], '{:.2f}x')}"
                   + (f" [{PAPER_COST[r['key']]:.2f}x]" if r['key'] in PAPER_COST else '') +
                   f" | {num(r['mean_id_length'], '{:.2f}')} | "
                   f"{num(r['tokens_per_item'], '{:.2f}')} | {num(r['train_seconds'], '{:.0f}')} | {r['status']}"
                   + (f" (reused the {r['reused']})" if r['reused'] else '') + ' |')
  lines += diagnostics_table(rows)
  lines += ['', '## What holds here', ''] + claims(rows) + [
      '', 'Cells are the mean ± std over seeds. With two or more seeds a claim is tested paired by seed (95 % t '
      'interval of the per-seed difference, the paper\'s paired test); with one seed, against two binomial standard '
      'errors over the test users, where the seed-to-seed spread is not measured. "Mean ID length" counts '
      'semantic-ID tokens before SemanticBPE; "tokens per item" is what the retriever decodes (after BPE).', '']
  jobs.write_table(out, lines, rows)
