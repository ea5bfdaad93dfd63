"""CAPSID tokenizer diagnostics on Amazon Beauty: routing at initialisation and after a short fit.

  PYTHONPATH=. python benchmarks/bench_capsid_tokenizer.py --arg=cpu --steps=30 --stage2_steps=5 --workdir=/tmp/m31
  PYTHONPATH=. python benchmarks/bench_capsid_tokenizer.py --arg=cpu --init_only --pose_init=2 --vote_scale=4,4,16

Prints the paper's tokenizer diagnostics (genrec/tokenizer_stats.py) and, after a fit, the
cosines of adjacent tokens (BPE_COS) and the SemanticBPE statistics (merges, vocabulary, ID length,
collisions, distinct first tokens before/after) with e_t = 'item_mean' under both encoding orders
and with the first token kept, and with e_t = 'centre'. Numbers: results/capsid_tokenizer_beauty.md.
"""
import argparse
import json
import os
import time

import numpy as np

from deres_jax.config import load_file
from deres_jax.genrec import capsid_fit
from deres_jax.genrec import data as data_lib
from deres_jax.genrec import semantic_bpe
from deres_jax.genrec import tasks
from deres_jax.genrec import tiger
from deres_jax.genrec import tokenizer_stats

KEYS = ('collision_rate', 'utilisation', 'utilisation_per_level', 'gini', 'intra_code_similarity',
        'stop_rule_share', 'length_hist', 'mean_length', 'mean_confidence_per_level', 'mean_residual_norm_per_level',
        'mean_subtracted_norm_per_level', 'mean_winner_weight_per_level', 'mean_winner_weight')


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--arg', default='cpu', help='beauty_capsid_bpe.py preset[_ablation]')
  ap.add_argument('--steps', type=int, default=30)
  ap.add_argument('--stage2_steps', type=int, default=5)
  ap.add_argument('--batch_size', type=int, default=512)
  ap.add_argument('--workdir', default='/tmp/capsid_tokenizer')
  ap.add_argument('--init_only', action='store_true', help='route with the initial parameters only')
  ap.add_argument('--pose_init', type=float, default=None)
  ap.add_argument('--vote_scale', default=None, help='s_l per layer, comma-separated (the last repeats)')
  ap.add_argument('--no_centre', action='store_true', help='keep the random projection uncentred (the old init)')
  ap.add_argument('--kmeans_iters', type=int, default=None)
  a = ap.parse_args()
  c = load_file(os.path.join(os.path.dirname(__file__), '..', 'configs', 'genrec', 'beauty_capsid_bpe.py'), a.arg)
  c.tokenizer.update(steps=a.steps, stage2_steps=a.stage2_steps, log_every=10, batch_size=a.batch_size,
                     spread_anneal_steps=max(a.steps * 2 // 3, 1))
  for k in ('pose_init', 'kmeans_iters'):
    if getattr(a, k) is not None:
      c.tokenizer[k] = getattr(a, k)
  if a.vote_scale:
    c.tokenizer.vote_scale = tuple(float(v) for v in a.vote_scale.split(','))
  c.tokenizer.centre = not a.no_centre
  data = data_lib.load(c.data.path, c.data.dataset, c.data.max_len)
  t0 = time.time()
  if a.init_only:
    x = data_lib.item_features(c, data)
    x = (x - x[1:].mean(0)) / max(float(x[1:].std()), 1e-8)   # as tasks.tokenizer_stage
    model = tasks.capsid_model(c.tokenizer, x.shape[1])
    p = capsid_fit.init_params(model, np.asarray(x[data_lib.training_items(data)], np.float32), c.seed,
                               c.tokenizer.kmeans_iters, c.tokenizer.pose_init, tuple(c.tokenizer.vote_scale),
                               centre=c.tokenizer.centre)
    r = capsid_fit.route_items(model, p, x[1:])
    d = tokenizer_stats.diagnostics(r['tokens'], c.tokenizer.codebook_size, x[1:], r)
    print('INIT', json.dumps({k: d.get(k) for k in KEYS}), f'{time.time() - t0:.0f}s', flush=True)
    return
  table, stats = tasks.tokenizer_stage(c, data, a.workdir)
  print('TOKENIZER', json.dumps({k: stats.get(k) for k in KEYS + ('mean_id_length',)}), f'{time.time() - t0:.0f}s',
        flush=True)
  # cos(e_a, e_b) of the adjacent tokens in the IDs under both choices of e (semantic_bpe.py, Eq. S3).
  e = np.load(os.path.join(a.workdir, 'tokenizer', 'code_embeddings.npy'))                # [L, K, D]
  codes = table.codes[1:, :e.shape[0]]
  layout = tiger.TokenLayout(table.level_sizes, c.tokenizer.num_user_tokens)
  item_tok = layout.item_tokens(table.codes)
  vecs = np.load(os.path.join(a.workdir, 'tokenizer', 'item_vectors.npy'))
  means = semantic_bpe.item_mean_embeddings([r[r > 0] for r in item_tok[1:]], vecs, layout.first_merged)
  per_level = {'centre': e, 'item_mean': np.stack([means[layout.offsets[l]:layout.offsets[l] + e.shape[1]]
                                                    for l in range(e.shape[0])])}
  for name, v in per_level.items():
    v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    cos = np.concatenate([(v[l, codes[ok, l]] * v[l + 1, codes[ok, l + 1]]).sum(1) for l in range(e.shape[0] - 1)
                          for ok in [(codes[:, l] >= 0) & (codes[:, l + 1] >= 0)]])
    q = np.quantile(cos, [.5, .9, .99, 1]).round(3).tolist()
    share = {f'share_above_{t}': float((cos > t).mean()) for t in (0.55, 0.9)}
    print('BPE_COS', name, json.dumps({'pairs': len(cos), 'quantiles_50_90_99_max': q, **share}), flush=True)
  path = os.path.join(a.workdir, 'tokenizer', 'bpe.npz')
  for emb, order, keep in (('item_mean', 'left', 0), ('item_mean', 'rank', 0), ('item_mean', 'left', 1),
                           ('centre', 'left', 0)):
    c.bpe.update(order=order, keep_prefix=keep, embedding=emb)
    if os.path.exists(path) and order != 'rank':   # 'rank' re-encodes the merges learned for 'left'
      os.remove(path)
    t1 = time.time()
    _, _, bstats = tasks.bpe_stage(c, data, a.workdir, layout, item_tok)
    print('BPE', emb, order, keep, json.dumps(bstats), f'{time.time() - t1:.0f}s', flush=True)


if __name__ == '__main__':
  main()
