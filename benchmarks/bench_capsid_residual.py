"""Why CAPSID's residual rule (||r_l|| <= eps) rarely fires on Beauty: per-layer residual diagnostics (issue 31).

  PYTHONPATH=. python benchmarks/bench_capsid_residual.py --tag base                       # init only
  PYTHONPATH=. python benchmarks/bench_capsid_residual.py --tag base --steps 30 --stage2_steps 5
  PYTHONPATH=. python benchmarks/bench_capsid_residual.py --tag deep32 --set 'vote_scale=(4.,4.,16.,32.)'
  PYTHONPATH=. python benchmarks/bench_capsid_residual.py --sweep '4,2;4,2;16,2|1,2|0.5,4'  # one layer at a time
  PYTHONPATH=. python benchmarks/bench_capsid_residual.py --references                    # RQ-KMeans, NN distances

For the `cpu` preset of configs/genrec/beauty_capsid.py (the item features of tasks.tokenizer_stage, cached
in --cache), prints the paper's diagnostics (tokenizer_stats.py) and, per layer over the items whose ID
reaches it: ||r_{l-1}||, the vote norms, ||squash(u_winner)||, the norm of what the layer subtracts
||sum_k c_k squash(u_k)||, cos(r_{l-1}, subtracted), max_k c_k, ||o||, the confidence, ||r_l|| and the
shares that stop by each rule. --recon residual replaces the decoder reconstruction by ||r_0 - r_hat||^2
(a reading of the paper's ||x - x_hat||^2 without a decoder; not in the library). --init_alive fits layer
l's centroids on the training items still routed at l. --sweep: layer by layer, the first (s, w) of a
layer is kept for the next. Numbers: results/capsid_tokenizer_beauty.md (issue 31 follow-up).
"""
import argparse
import ast
import json
import os
import sys
import time

import jax.numpy as jnp
import numpy as np

from deres_jax.config import load_file
from deres_jax.genrec import capsid
from deres_jax.genrec import capsid_fit
from deres_jax.genrec import data as data_lib
from deres_jax.genrec import rqkmeans
from deres_jax.genrec import tasks
from deres_jax.genrec import tokenizer_stats

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', 'genrec', 'beauty_capsid.py')


def features(c, cache):
  if os.path.exists(cache):
    z = np.load(cache)
    return z['x'], z['tr']
  data = data_lib.load(c.data.path, c.data.dataset, c.data.max_len)
  x = data_lib.item_features(c, data)
  x = (x - x[1:].mean(0)) / max(float(x[1:].std()), 1e-8)   # as tasks.tokenizer_stage
  tr = np.asarray(data_lib.training_items(data))
  np.savez(cache, x=x.astype(np.float32), tr=tr)
  return x.astype(np.float32), tr


def layer_params(r, K, s, w, seed, kmeans_iters, noise=0.05, rng=None):
  """capsid_fit.init_params' rule for one layer: b = (s/n) mu, W = (s/n)(w - |mu|^2/(2n^2)) I (+ noise)."""
  mu, _ = rqkmeans.kmeans(r, K, kmeans_iters, seed)
  n = max(float(np.linalg.norm(r, axis=1).mean()), 1e-6)
  g = s / n
  D = r.shape[1]
  pose = (g * (w - (mu ** 2).sum(-1) / (2 * n ** 2)))[:, None, None] * np.eye(D, dtype=np.float32)
  if rng is not None:
    pose = pose + rng.normal(0, noise / np.sqrt(D), pose.shape)
  return pose.astype(np.float32), (g * mu).astype(np.float32)


def init_alive(model, params, x_train, seed, kmeans_iters, w, scales):
  """init_params with layer l's centroids fitted on the training items the stop rules still route at l."""
  r = np.asarray(model.apply({'params': params}, jnp.asarray(x_train), method=capsid.CapsID.encode))
  L, K = model.max_levels, model.num_capsules
  scales = list(scales) + [scales[-1]] * L
  rng, alive = np.random.default_rng(seed), np.ones(len(r), bool)
  pose, bias = np.asarray(params['pose']).copy(), np.asarray(params['bias']).copy()
  for l in range(L):
    ra = r[alive] if alive.sum() >= 4 * K else r
    pose[l], bias[l] = layer_params(ra, K, scales[l], w, seed + l, kmeans_iters, rng=rng)
    u = capsid.votes(jnp.asarray(r), jnp.asarray(pose[l]), jnp.asarray(bias[l]))
    c, o, _ = capsid.route(u, model.iters, model.squash_k)
    conf = np.asarray(c.max(1) * jnp.linalg.norm(o, axis=1))
    r = np.asarray(r - capsid.routed_vote(u, c, model.squash_k, model.residual))
    alive &= (conf < model.tau) & (np.linalg.norm(r, axis=1) > model.eps)
  return dict(params, pose=jnp.asarray(pose), bias=jnp.asarray(bias))


def per_layer(model, params, r0):
  """Replays CapsID.tokenize layer by layer; means over the items whose ID reaches the layer."""
  r, alive, rows = jnp.asarray(r0), np.ones(len(r0), bool), []
  for l in range(model.max_levels):
    ad = (params['adapter_a'][l], params['adapter_b'][l]) if model.adapter_rank else None
    u = capsid.votes(r, params['pose'][l], params['bias'][l], ad)
    c, o, _ = capsid.route(u, model.iters, model.squash_k)
    us = jnp.take_along_axis(u, jnp.argmax(c, 1)[:, None, None], 1)[:, 0]
    q = capsid.routed_vote(u, c, model.squash_k, model.residual)
    rin, qn = np.linalg.norm(np.asarray(r), axis=1), np.linalg.norm(np.asarray(q), axis=1)
    conf = np.asarray(c.max(1) * jnp.linalg.norm(o, axis=1))
    r = r - q
    rn = np.linalg.norm(np.asarray(r), axis=1)
    m = lambda v: float(np.mean(np.asarray(v)[alive]))
    rows.append(dict(l=l + 1, n=int(alive.sum()), r_in=m(rin), vote=m(jnp.linalg.norm(u, axis=2).mean(1)),
                     sq_win=m(jnp.linalg.norm(capsid.squash(us, model.squash_k), axis=1)), sub=m(qn),
                     cos=m(np.asarray((r + q) * q).sum(1) / np.maximum(rin * qn, 1e-12)), cmax=m(c.max(1)),
                     o=m(jnp.linalg.norm(o, axis=1)), conf=m(conf), r_out=m(rn), p_res=m(rn <= model.eps),
                     p_conf=m(conf >= model.tau)))
    alive &= (conf < model.tau) & (rn > model.eps)
  return rows


def report(tag, model, params, x):
  r0 = np.asarray(model.apply({'params': params}, jnp.asarray(x[1:]), method=capsid.CapsID.encode))
  rows = per_layer(model, params, r0)
  routed = capsid_fit.route_items(model, params, x[1:])
  d = tokenizer_stats.diagnostics(routed['tokens'], model.num_capsules, x[1:], routed)
  codes, _ = capsid_fit.resolve(routed['tokens_all'], routed['length'], 'extend')
  out = dict(tag=tag, argv=sys.argv[1:], **{k: d[k] for k in ('collision_rate', 'utilisation', 'gini',
             'intra_code_similarity', 'stop_rule_share', 'routed_length_hist', 'mean_routed_length')},
             mean_id_length=float((codes >= 0).sum(1).mean()), layers=rows)
  print('RESULT', json.dumps(out), flush=True)
  st = [round(v, 3) for v in d['stop_rule_share'].values()]
  print(f"[{tag}] collision {d['collision_rate']:.3f} util {d['utilisation']:.3f} gini {d['gini']:.2f} intra "
        f"{d['intra_code_similarity']:.3f} stop conf/res/cap {st} length {d['routed_length_hist'][1:]} mean "
        f"{d['mean_routed_length']:.2f} (after resolution {out['mean_id_length']:.2f})")
  for w in rows:
    print('   ' + ' '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}' for k, v in w.items()), flush=True)


def residual_recon(self, x_nd, margin=0.2):
  """CapsID.__call__ with recon = ||r_0 - r_hat||^2 (= the final residual's squared norm) instead of D(r_hat)."""
  r0 = self.encode(x_nd)
  out = self.tokenize(r0, margin)
  out['recon'] = ((r0 - out['r_hat']) ** 2).sum(1).mean()
  return self.decode(out['r_hat']), out


def sweep(spec, model, params, x, tr, kmeans_iters):
  enc = lambda a: np.asarray(model.apply({'params': params}, jnp.asarray(a), method=capsid.CapsID.encode))
  r_tr, r_all = enc(x[tr]), enc(x[1:])
  for l, cfg in enumerate(spec.split(';')):
    nxt = None
    for s, w in [tuple(map(float, t.split(','))) for t in cfg.split('|')]:
      pose, bias = layer_params(r_tr, model.num_capsules, s, w, l, kmeans_iters)
      outs = []
      for r in (r_tr, r_all):
        u = capsid.votes(jnp.asarray(r), jnp.asarray(pose), jnp.asarray(bias))
        c, o, _ = capsid.route(u, model.iters, model.squash_k)
        q = capsid.routed_vote(u, c, model.squash_k)
        outs.append((np.asarray(r - q), np.asarray(c.max(1) * jnp.linalg.norm(o, axis=1)), np.asarray(c.max(1)),
                     np.linalg.norm(np.asarray(q), axis=1)))
      ra, conf, cmax, qn = outs[1]
      rn = np.linalg.norm(ra, axis=1)
      print(f'SWEEP layer {l + 1} r_in={np.linalg.norm(r_all, axis=1).mean():.3f} s={s} w={w}: sub={qn.mean():.3f} '
            f'r_out={rn.mean():.3f} p_res={np.mean(rn <= model.eps):.3f} cmax={cmax.mean():.3f} '
            f'p_conf={np.mean(conf >= model.tau):.3f}', flush=True)
      nxt = nxt or (outs[0][0], ra)
    r_tr, r_all = nxt


def references(model, params, x, tr, kmeans_iters):
  """What any codebook could do: RQ-KMeans (6 x 256) residual norms, and each item's nearest other item."""
  r0 = np.asarray(model.apply({'params': params}, jnp.asarray(x[1:]), method=capsid.CapsID.encode))
  xu = x[1:] / np.linalg.norm(x[1:], axis=1, keepdims=True)
  for name, v in (('r_0 (centred projection)', r0), ('x / |x| (features)', xu)):
    books = rqkmeans.fit(np.concatenate([v[:1], v]), 6, model.num_capsules, kmeans_iters, 0, tr)
    _, norms = rqkmeans.encode(v, books)
    best = np.full(len(v), -2.0)
    for i in range(0, len(v), 2048):
      s = v[i:i + 2048] @ v.T
      s[np.arange(len(s)), np.arange(i, i + len(s))] = -2
      best[i:i + 2048] = s.max(1)
    d = np.sqrt(np.maximum(2 - 2 * best, 0))
    print(f'REF {name}: RQ-KMeans residual after levels 1..6 {np.round(norms[1:].mean(1), 3).tolist()}, share '
          f'<= eps {np.round((norms[1:] <= model.eps).mean(1), 4).tolist()}; nearest other item distance '
          f'quantiles 10/50/90 {np.round(np.quantile(d, [.1, .5, .9]), 3).tolist()}, share <= eps '
          f'{np.mean(d <= model.eps):.4f}', flush=True)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--tag', default='run')
  ap.add_argument('--steps', type=int, default=0, help='stage-1 steps (0: init only)')
  ap.add_argument('--stage2_steps', type=int, default=0)
  ap.add_argument('--set', action='append', default=[], help='tokenizer field=python literal (repeatable)')
  ap.add_argument('--kmeans_iters', type=int, default=10)
  ap.add_argument('--recon', default='decoder', choices=('decoder', 'residual'))
  ap.add_argument('--init_alive', action='store_true')
  ap.add_argument('--sweep', default='')
  ap.add_argument('--references', action='store_true')
  ap.add_argument('--cache', default='/tmp/capsid_beauty_features.npz')
  a = ap.parse_args()
  c = load_file(CONFIG, 'cpu')
  c.tokenizer.update(steps=a.steps, stage2_steps=a.stage2_steps, log_every=10, batch_size=512,
                     spread_anneal_steps=max(a.steps * 2 // 3, 1), kmeans_iters=a.kmeans_iters)
  for s in a.set:
    k, v = s.split('=', 1)
    c.tokenizer[k] = ast.literal_eval(v)
  x, tr = features(c, a.cache)
  t = c.tokenizer
  model = tasks.capsid_model(t, x.shape[1])
  t0 = time.time()
  params = capsid_fit.init_params(model, x[tr], c.seed, t.kmeans_iters, t.pose_init, tuple(t.vote_scale),
                                  centre=t.centre)
  if a.sweep or a.references:
    (sweep(a.sweep, model, params, x, tr, t.kmeans_iters) if a.sweep else
     references(model, params, x, tr, t.kmeans_iters))
    return
  if a.init_alive:
    params = init_alive(model, params, x[tr], c.seed, t.kmeans_iters, t.pose_init, tuple(t.vote_scale))
  report(a.tag + ':init', model, params, x)
  if a.steps:
    if a.recon == 'residual':
      capsid.CapsID.__call__ = residual_recon
    fitted = params
    capsid_fit.init_params = lambda *_, **__: fitted          # stage 1 starts from the init reported above
    params, _ = capsid_fit.fit(model, x, tr, t, c.seed, log=lambda _: None)
    if a.stage2_steps:
      params, _ = capsid_fit.fit(model, x, tr, t, c.seed, log=lambda _: None, params=params, stage=2)
    report(f'{a.tag}:fit{a.steps}+{a.stage2_steps}', model, params, x)
  print(f'time {time.time() - t0:.0f} s', flush=True)


if __name__ == '__main__':
  main()
