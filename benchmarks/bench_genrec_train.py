"""Training speed of the TIGER retriever: windows/s, achieved FLOP/s and its share of the peak.

  python benchmarks/bench_genrec_train.py [--preset=cpu] [--batch=128] [--reps=10] [--steps=60]

A randomly initialised TIGER of a genrec preset's size (`configs/genrec/beauty_tiger_rqvae.py`)
with random 3 x 256 (+ collision token) IDs. Part 1, a full-length batch (20-item histories:
encoder length 81, decoder length 5): the jitted train step (forward, backward, Adam) with its
dropout, the forward pass alone, the encoder alone and the output head alone, each the median of
`reps` after a compile run; the step's FLOPs from XLA's cost analysis; the float32 peak of this
machine as the best of a 2048 x 2048 matmul. The split says where the step's time goes (threefry
lowered unrolled, as deres_jax installs it: deres_jax/cpu_rng.py).
Part 2, the real Beauty training windows (`--data_path`, the preset's `data.windows`), `steps`
batches of the training loop's iterator, four rows in the same run, each timed after every shape
has compiled: JAX's rolled CPU threefry lowering or the unrolled one, times every batch padded to
20 items (`data.bucket_items=0`, the loop before length bucketing) or length-bucketed batches
cut to their longest history (`data.bucket_items`, default 4). The first row is the loop as it
was before both changes.
"""
import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deres_jax import cpu_rng  # pylint: disable=wrong-import-position
from deres_jax.config import load_file  # pylint: disable=wrong-import-position
from deres_jax.data import iterator  # pylint: disable=wrong-import-position
from deres_jax.genrec import data as data_lib  # pylint: disable=wrong-import-position
from deres_jax.genrec import tiger  # pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(fn, reps):
  jax.block_until_ready(fn())  # compile
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def matmul_peak(reps: int = 5, n: int = 2048) -> float:
  """FLOP/s of the best float32 n x n matmul of `reps` (this machine's practical peak)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best = min(_once(f, a) for _ in range(reps))
  return 2 * n ** 3 / best


def _once(f, a):
  t0 = time.perf_counter()
  jax.block_until_ready(f(a))
  return time.perf_counter() - t0


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--preset', default='cpu')
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--reps', type=int, default=10)
  p.add_argument('--steps', type=int, default=60, help='real-window batches timed per variant')
  p.add_argument('--bucket_items', type=int, default=4)
  p.add_argument('--data_path', default=os.path.join(ROOT, '..', 'shared', 'data', 'amazon'))
  args = p.parse_args()
  c = load_file(os.path.join(ROOT, 'configs', 'genrec', 'beauty_tiger_rqvae.py'), args.preset)
  layout = tiger.TokenLayout([256, 256, 256, 2], num_user_tokens=c.tokenizer.num_user_tokens)
  model = tiger.Tiger(vocab_size=layout.vocab_size, max_enc_len=1 + 20 * 4, max_dec_len=5,
                      level_offsets=tuple(int(o) for o in layout.offsets), level_sizes=layout.level_sizes,
                      **c.model)
  rng = np.random.default_rng(0)
  codes = np.concatenate([np.full((1, 4), -1), np.stack([rng.integers(0, 256, 12101)] * 3 +
                                                         [rng.integers(0, 2, 12101)], 1)])
  item_tok = layout.item_tokens(codes)
  target = rng.integers(1, 12102, args.batch)
  enc = jnp.asarray(layout.encoder_input(rng.integers(0, 10 ** 5, args.batch),
                                         rng.integers(1, 12102, (args.batch, 20)), item_tok))
  dec_in, dec_out = (jnp.asarray(x) for x in layout.decoder_io(target, item_tok))
  batch = {'enc': enc, 'dec_in': dec_in, 'dec_out': dec_out}
  params = jax.jit(model.init)(jax.random.PRNGKey(0), enc[:1], dec_in[:1])['params']
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  def make_step():
    def step(params, opt, batch):
      (loss, _), grads = jax.value_and_grad(tiger.loss_fn, argnums=1, has_aux=True)(model, params, batch,
                                                                               jax.random.PRNGKey(1))
      updates, opt = tx.update(grads, opt, params)
      return optax.apply_updates(params, updates), opt, loss
    return jax.jit(step)

  step = make_step()

  forward = jax.jit(lambda p, b: model.apply({'params': p}, b['enc'], b['dec_in']))
  encode = jax.jit(lambda p, b: model.apply({'params': p}, b['enc'], method=tiger.Tiger.encode))
  mem = encode(params, batch)
  hidden = jax.jit(lambda p, b, m: model.apply({'params': p}, m, b['enc'], b['dec_in'],
                                               method=tiger.Tiger.decode_hidden))(params, batch, mem)
  head = jax.jit(lambda p, h: model.apply({'params': p}, h, method=tiger.Tiger.logits))

  flops = step.lower(params, opt, batch).compile().cost_analysis()
  flops = (flops[0] if isinstance(flops, (list, tuple)) else flops).get('flops', float('nan'))
  t_step = timed(lambda: step(params, opt, batch), args.reps)
  t_fwd = timed(lambda: forward(params, batch), args.reps)
  t_enc = timed(lambda: encode(params, batch), args.reps)
  t_head = timed(lambda: head(params, hidden), args.reps)
  peak = matmul_peak()
  n = sum(x.size for x in jax.tree.leaves(params))
  print(f'jax {jax.__version__}, {jax.devices()[0].platform} x{jax.device_count()}, preset {args.preset!r} '
        f'({n / 1e6:.2f}M parameters), batch {args.batch}, encoder length {enc.shape[1]}, median of {args.reps}')
  print('| what | ms | share of the step |')
  print('|---|---:|---:|')
  for name, t in [('train step (fwd + bwd + Adam)', t_step), ('forward', t_fwd), ('  encoder', t_enc),
                  ('  output head (vocabulary projection)', t_head)]:
    print(f'| {name} | {1000 * t:.1f} | {t / t_step:.0%} |')
  print(f'windows/s {args.batch / t_step:.0f}; XLA FLOPs/step {flops:.3g}; achieved {flops / t_step / 1e9:.1f} '
        f'GFLOP/s = {flops / t_step / peak:.1%} of the measured float32 matmul peak {peak / 1e9:.0f} GFLOP/s')
  real_windows(args, c, layout, item_tok, make_step, params, opt)


def real_windows(args, c, layout, item_tok, make_step, params, opt):
  """Part 2: windows/s of the training loop's batches of real Beauty windows: padded or bucketed,
  with JAX's rolled CPU threefry lowering or deres_jax's unrolled one (cpu_rng.py)."""
  data = data_lib.load(args.data_path, c.data.dataset, c.data.max_len)
  rows, hist, target = data_lib.sliding_windows(data, c.data.windows)
  split = {'user': data.users[rows], 'hist': hist, 'target': target}
  lengths = (hist > 0).sum(1)
  print(f'\nreal windows ({c.data.dataset}, {c.data.windows!r}): {len(target):,}, mean history '
        f'{lengths.mean():.2f} items of {c.data.max_len}; {args.steps} batches of {args.batch} per row')
  print('| threefry lowering | batches | windows/s | ms/step | shapes | mean encoder length | vs the first row |')
  print('|---|---|---:|---:|---:|---:|---:|')
  rate = {}
  for unrolled, bucket_items in ((False, 0), (False, args.bucket_items), (True, 0), (True, args.bucket_items)):
    cpu_rng.use(unrolled)
    step = make_step()   # a fresh jit: lowered with this threefry rule
    buckets = -(-lengths // bucket_items) if bucket_items else None
    it = iterator.BatchIterator(split, args.batch, seed=0, columns=None, buckets=buckets)
    batches = [{k: jnp.asarray(v) for k, v in layout.training_batch(next(it), item_tok, bucket_items).items()}
               for _ in range(args.steps)]
    shapes = {}
    for b in batches:   # compile every shape first
      shapes.setdefault(b['enc'].shape, b)
    for b in shapes.values():
      jax.block_until_ready(step(params, opt, b))
    t0 = time.perf_counter()
    for b in batches:
      out = step(params, opt, b)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t0
    rate[unrolled, bucket_items] = r = args.steps * args.batch / dt
    mean_len = np.mean([b['enc'].shape[1] for b in batches])
    name = f'bucket_items={bucket_items}' + (' (padded to 20 items)' if not bucket_items else '')
    print(f"| {'unrolled' if unrolled else 'rolled (JAX)'} | {name} | {r:.0f} | {1000 * dt / args.steps:.1f} | "
          f'{len(shapes)} | {mean_len:.1f} | {r / rate[False, 0]:.2f}x |')
  cpu_rng.install()


if __name__ == '__main__':
  main()
