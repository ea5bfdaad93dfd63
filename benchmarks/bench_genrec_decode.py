"""Beam-search decoding latency of the TIGER retriever: beam width x KV cache x trie constraint.

  python benchmarks/bench_genrec_decode.py [--batch=64] [--beams=10,20,50] [--reps=3]

A randomly initialised TIGER of the Beauty 'cpu' preset size (2+2 layers, width 64) over
12,101 random 4-token semantic IDs (3 levels x 256 codes + an extra token; what decoding costs
does not depend on the weights). Cached: beam.beam_search_cached (cross-attention keys/values
of the memory projected once, each step runs the decoder for the newest token only; the same
beams as uncached, tests/test_genrec_tiger_model.py). Constrained: beam.beam_search over the
prefix trie, recomputing the decoder over the whole prefix (every result a real item).
Unconstrained: the same decoder and step count, top-k over the whole vocabulary at every step
(IDs may be invalid). Prints ms per batch (median of `reps` after a compile run), items/s, and
the ratios measured in this run.
"""
import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from deres_jax.genrec import beam
from deres_jax.genrec import tiger


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def unconstrained(logprob_fn, state, batch_size: int, beam_size: int, steps: int):
  """Plain beam search: the best K of K x V continuations at each of `steps` steps."""
  B, K = batch_size, beam_size
  score = jnp.where(jnp.arange(K) == 0, 0.0, -jnp.inf)[None].repeat(B, 0)
  tokens = jnp.zeros((B, K, steps), jnp.int32)
  for t in range(steps):
    lp_bkv = logprob_fn(state, tokens, t)
    V = lp_bkv.shape[-1]
    score, flat = jax.lax.top_k((score[..., None] + lp_bkv).reshape(B, K * V), K)
    tokens = jnp.take_along_axis(tokens, (flat // V)[..., None], axis=1).at[:, :, t].set(flat % V)
  return tokens, score


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--beams', default='10,20,50')
  p.add_argument('--reps', type=int, default=3)
  p.add_argument('--items', type=int, default=12101)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  codes = np.unique(rng.integers(0, 256, (args.items * 2, 3)), axis=0)
  codes = codes[rng.permutation(len(codes))[:args.items]]  # unique, and spread over all first codes
  codes = np.concatenate([np.full((1, 4), -1), np.concatenate([codes, np.zeros((len(codes), 1), int)], 1)])
  layout = tiger.TokenLayout([256, 256, 256, 1], num_user_tokens=2000)
  item_tok = layout.item_tokens(codes)
  model = tiger.Tiger(vocab_size=layout.vocab_size, max_enc_len=1 + 20 * 4, max_dec_len=5, width=64, num_heads=4,
                      head_dim=16, mlp_dim=256, enc_depth=2, dec_depth=2,
                      level_offsets=tuple(int(o) for o in layout.offsets), level_sizes=layout.level_sizes)
  enc = jnp.asarray(layout.encoder_input(rng.integers(0, 10 ** 5, args.batch),
                                         rng.integers(1, len(codes), (args.batch, 20)), item_tok))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), enc[:1], jnp.zeros((1, 5), jnp.int32))['params']
  mem = jax.jit(lambda p, e: model.apply({'params': p}, e, method=tiger.Tiger.encode))(params, enc)
  state = (params, mem, enc)
  trie = beam.build_trie([r[r > 0] for r in item_tok[1:]], np.arange(1, len(codes)), tiger.EOS)
  arrays, fn = beam.trie_arrays(trie), tiger.make_logprob_fn(model)

  def timed(run):
    jax.block_until_ready(run())  # compile
    ts = []
    for _ in range(args.reps):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      ts.append(time.perf_counter() - t0)
    return 1000 * float(np.median(ts))

  print(f'jax {jax.__version__}, {jax.devices()[0].platform}, batch {args.batch}, {len(codes) - 1} items, '
        f'trie max children {trie.max_children}, {trie.max_depth} steps; median of {args.reps}')
  cached_fns = tiger.make_cached_step(model)
  print('| beam | cached ms/batch | ms/user | uncached ms/batch | cached / uncached | unconstrained ms/batch | '
        'uncached / unconstrained |')
  print('|---:|---:|---:|---:|---:|---:|---:|')
  rows = []
  for k in [int(b) for b in args.beams.split(',')]:
    kv = timed(lambda: beam.beam_search_cached(*cached_fns, arrays, state, args.batch, k, trie.max_children,
                                               trie.max_depth))
    c = timed(lambda: beam.beam_search(fn, arrays, state, args.batch, k, trie.max_children, trie.max_depth))
    u = timed(lambda: unconstrained(fn, state, args.batch, k, trie.max_depth))
    rows.append((k, kv, c))
    print(f'| {k} | {kv:.1f} | {kv / args.batch:.2f} | {c:.1f} | {kv / c:.2f} | {u:.1f} | {c / u:.2f} |')
  k0, kv0, c0 = rows[0]
  for k, kv, c in rows[1:]:
    print(f'beam {k} / beam {k0}: cached {kv / kv0:.2f}x, uncached {c / c0:.2f}x the time')


if __name__ == '__main__':
  main()
