"""DCNv2 training throughput: deres_jax against FuxiCTR (PyTorch) on the same data and CPU.

Optional: installs nothing. Needs `pip install torch fuxictr` done by you (FuxiCTR 2.3.10 with
torch 2.13.0 CPU was used for the figures in benchmarks/README.md), e.g. in a venv that also
sees deres_jax:

  python -m venv --system-site-packages /tmp/fx && /tmp/fx/bin/pip install torch==2.13.0 fuxictr
  /tmp/fx/bin/python benchmarks/compare_fuxictr.py --threads=2

Both sides train DCNv2 (parallel structure) with FuxiCTR's Criteo sizes: embedding 16 per
field, 3 full-rank cross layers, DNN 400-400-400 (ReLU), Adam 1e-3, batch 4096, on the same
synthetic Criteo-format rows (39 categorical fields). The FuxiCTR side is FuxiCTR's model-zoo
DCNv2 assembled from the layers the `fuxictr` wheel ships (`CrossNetV2`, `MLP_Block`; the
model-zoo class itself is not in the wheel) with one torch.nn.Embedding per field, as
FuxiCTR's FeatureEmbedding does, trained with a plain forward/backward/step loop (no
data-loader or logging overhead counted on either side). Prints examples/s of each
(median step time after warm-up) and their ratio.
"""
import argparse
import statistics
import sys
import time

import numpy as np


def make_data(rows, fields, seed=0):
  rng = np.random.default_rng(seed)
  vocab = np.geomspace(10, 100_000, fields).astype(np.int64)
  cat = np.stack([rng.zipf(1.2, rows) % v for v in vocab], 1).astype(np.int64)
  label = (rng.random(rows) < 0.25).astype(np.float32)
  return vocab, cat, label


def bench_fuxictr(vocab, cat, label, batch, steps, warmup, threads):
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from fuxictr.pytorch.layers import CrossNetV2, MLP_Block  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads)
  torch.manual_seed(0)

  class DCNv2(nn.Module):
    """FuxiCTR model_zoo/DCNv2 forward, 'parallel' structure."""

    def __init__(self):
      super().__init__()
      self.embeddings = nn.ModuleList([nn.Embedding(int(v), 16) for v in vocab])
      dim = 16 * len(vocab)
      self.crossnet = CrossNetV2(dim, 3)
      self.parallel_dnn = MLP_Block(input_dim=dim, output_dim=None, hidden_units=[400, 400, 400],
                                    hidden_activations='ReLU', output_activation=None,
                                    dropout_rates=0.0, batch_norm=False)
      self.fc = nn.Linear(dim + 400, 1)

    def forward(self, x):
      emb = torch.cat([e(x[:, i]) for i, e in enumerate(self.embeddings)], dim=-1)
      return self.fc(torch.cat([self.crossnet(emb), self.parallel_dnn(emb)], -1)).squeeze(-1)

  model = DCNv2()
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)
  loss_fn = nn.BCEWithLogitsLoss()
  x_all, y_all = torch.from_numpy(cat), torch.from_numpy(label)
  times = []
  for i in range(warmup + steps):
    lo = (i * batch) % (len(label) - batch)
    x, y = x_all[lo:lo + batch], y_all[lo:lo + batch]
    t = time.perf_counter()
    opt.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    if i >= warmup:
      times.append(time.perf_counter() - t)
  return batch / statistics.median(times), float(loss)


def bench_deres_jax(vocab, cat, label, batch, steps, warmup):
  import jax  # pylint: disable=g-import-not-at-top
  from deres_jax import models  # pylint: disable=g-import-not-at-top
  from deres_jax.config import base_config  # pylint: disable=g-import-not-at-top
  from deres_jax.data import iterator  # pylint: disable=g-import-not-at-top
  from deres_jax.data.schema import Schema  # pylint: disable=g-import-not-at-top
  from deres_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from deres_jax.train import trainer  # pylint: disable=g-import-not-at-top
  from deres_jax.train.optim import make_optimizer  # pylint: disable=g-import-not-at-top
  c = base_config()
  c.model = models.model_config('dcnv2', embed_dim=16, num_cross=3, dnn_hidden=(400, 400, 400))
  # deres_jax ids reserve row 0 for OOV: shift ids by one and add the row.
  schema = Schema(cat_names=tuple(f'C{i}' for i in range(len(vocab))),
                  vocab_sizes=tuple(int(v) + 1 for v in vocab))
  mesh = trainer.make_mesh((('data', 1), ('model', 1)), jax.devices()[:1])
  model = models.build(c.model, schema)
  tx = make_optimizer(c.optim, 1000)
  host = lambda lo: {'label': label[lo:lo + batch], 'cat': (cat[lo:lo + batch] + 1).astype(np.int32)}
  state, shardings = step_lib.create_state(model, tx, mesh, c.sharding_rules, host(0), 0)
  step, _ = step_lib.make_steps(model, tx, mesh, shardings)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  batches = [iterator.to_global(host((i * batch) % (len(label) - batch)), sharding)
             for i in range(8)]
  times = []
  for i in range(warmup + steps):
    t = time.perf_counter()
    state, metrics = step(state, batches[i % len(batches)])
    jax.block_until_ready(metrics)
    if i >= warmup:
      times.append(time.perf_counter() - t)
  return batch / statistics.median(times), float(metrics['train/loss'])


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--rows', type=int, default=200_000)
  p.add_argument('--batch', type=int, default=4096)
  p.add_argument('--steps', type=int, default=15)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
  a = p.parse_args()
  try:
    import fuxictr  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
    import torch  # noqa: F401  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    sys.exit(f'error: this comparison needs FuxiCTR and PyTorch ({e}); install them yourself, '
             'e.g. `pip install torch fuxictr` (deres_jax itself never installs or imports them).')
  vocab, cat, label = make_data(a.rows, 39)
  ours, our_loss = bench_deres_jax(vocab, cat, label, a.batch, a.steps, a.warmup)
  theirs, their_loss = bench_fuxictr(vocab, cat, label, a.batch, a.steps, a.warmup, a.threads)
  print(f'DCNv2, batch {a.batch}, 39 fields x 16, cross 3, DNN 400-400-400, Adam')
  print(f'  deres_jax : {ours:>10,.0f} examples/s  (last loss {our_loss:.4f})')
  print(f'  FuxiCTR   : {theirs:>10,.0f} examples/s  (last loss {their_loss:.4f}, '
        f'torch threads {a.threads})')
  print(f'  ratio deres_jax / FuxiCTR: {ours / theirs:.2f}x (goal >= 2)')


if __name__ == '__main__':
  main()
