"""Connector overhead alone: forward + backward of U connected units with a cheap sublayer.

  python benchmarks/bench_connectors.py                 # depth 8 with sublayer units: U = 16
  python benchmarks/bench_connectors.py --width=256

Isolates what DeRes/AttnRes add to a PreNorm backbone: each unit is
    u_j = Connector(state, j);  out_j = tanh(Dense(u_j));  state = update_state(state, out_j)
with the library's own `connectors` (unrolled: static j, sources in a list), followed by the
output connector. Prints the median step time of the gradient of sum(out**2) for each
connector kind, interleaved (A, B, A, B, ...) so machine load affects all alike, the extra
milliseconds over PreNorm, and the number of (unit, visible source) pairs, the quantity the
extra time grows with: every pair costs a score, a weighted add, and their gradients.
"""
import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import connectors


class Backbone(nn.Module):
  """U connected units over token-major activations [T, B, D]."""
  kind: str
  units: int
  block_size: int

  @nn.compact
  def __call__(self, emb):  # [T, B, D]
    t, _, d = emb.shape
    kw = dict(kind=self.kind, width=d, num_tokens=t, num_units=self.units,
              block_size=self.block_size, depth_weights='silu')
    state = connectors.init_state(self.kind, emb, self.units, self.block_size, stacked=False)
    for j in range(self.units):
      u = connectors.Connector(name=f'conn_{j}', **kw)(state, j)
      out = jnp.tanh(nn.Dense(d, name=f'f_{j}')(u))
      state = connectors.update_state(state, out, j, self.block_size)
    return connectors.Connector(name='out', **kw)(state, self.units)


def pairs(units, block_size):
  """Sum over units j = 0..U (U = the output) of the sources visible to j."""
  return sum(j // block_size + (1 if j % block_size else 0) + 1 for j in range(units + 1))


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--tokens', type=int, default=8)
  p.add_argument('--width', type=int, default=64)
  p.add_argument('--units', type=int, default=16, help='connected units (2 per block: sublayers)')
  p.add_argument('--block_size', type=int, default=4)
  p.add_argument('--steps', type=int, default=30)
  a = p.parse_args()
  emb = jax.random.normal(jax.random.PRNGKey(0), (a.tokens, a.batch, a.width))
  runs = {}
  for kind in ('prenorm', 'attnres', 'deres'):
    net = Backbone(kind, a.units, a.block_size)
    params = net.init(jax.random.PRNGKey(1), emb)
    # Non-zero queries, so the depth attention is not trivially zero.
    params = jax.tree.map(lambda x: x + 0.01, params)
    grad = jax.jit(jax.grad(lambda prm, e, net=net: jnp.sum(net.apply(prm, e) ** 2), argnums=(0, 1)))
    jax.block_until_ready(grad(params, emb))
    runs[kind] = (grad, params, [])
  for _ in range(a.steps):
    for grad, params, times in runs.values():
      t = time.perf_counter()
      jax.block_until_ready(grad(params, emb))
      times.append(time.perf_counter() - t)
  base = statistics.median(runs['prenorm'][2])
  print(f'[T, B, D] = [{a.tokens}, {a.batch}, {a.width}], {a.units} units, block_size {a.block_size}, '
        f'{pairs(a.units, a.block_size)} (unit, source) pairs; forward + backward, median of {a.steps}')
  for kind, (_, _, times) in runs.items():
    m = statistics.median(times)
    print(f'{kind:8s} {1000 * m:8.2f} ms   extra over prenorm {1000 * (m - base):7.2f} ms '
          f'({m / base:.2f}x)')


if __name__ == '__main__':
  main()
