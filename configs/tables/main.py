"""Main table: DeRes against the twelve baselines at matched width (research/deres.md §1, §7).

  python launch/reproduce.py --table=main --data=synthetic --seeds=3
  python launch/reproduce.py --table=main --data=synthetic --preset=converged --seeds=5
  python launch/reproduce.py --table=main --data=criteo --data_path=/data/criteo_x4 --seeds=3

Every row is a small edit of `base_config(data)`: the Transformer-family rows share embed_dim,
width, depth, tokens and head; the connector rows (PreNorm, PostNorm, Hyper-Connections, mHC,
DenseFormer, AttnRes, DeRes) are the same CTR Transformer with another `model.connector`;
OneTrans, RankMixer, TokenMixer-Large, UniMixer and HiFormer are the zoo models at the same
width and depth; Wukong and DCNv2 (no tokens) are sized to land in the same FLOPs band. The
result file states the band. Rows train with the same data, optimiser and steps.

On synthetic data the model is CPU-sized: depth 4 with AttnRes blocks of 2 sublayers, so
the last units see the embedding, 3 completed blocks and a partial one. Two budgets
(`--preset`, PRESETS): 'short' (default, the older tables: 400 steps, half an epoch, last-step
parameters) and 'converged' (issue 26: every row trains to its validation optimum: up to 12
epochs, validation on 20k rows every half epoch, the learning rates x0.1 after a validation
without gain, early stop after 3 without gain, the best-validation parameters tested; the
library's recipe of configs/byo_csv.py: Adam 1e-3, embeddings 1e-2).
"""
from deres_jax import models
from deres_jax.config import base_config as library_base

NAME = 'main'
TITLE = 'DeRes against twelve baselines'
BASELINE = 'PreNorm Transformer'

# The shared model section (Transformer family).
WIDTH, DEPTH, EMBED, TOKENS, BLOCK = 16, 4, 8, 8, 2
SHARED = dict(embed_dim=EMBED, width=WIDTH, depth=DEPTH, num_heads=2, tokenizer='group',
              num_tokens=TOKENS, head_hidden=(32,))


PRESETS = ('short', 'converged')  # --preset: the training budget (module docstring)


def base_config(data: str = 'synthetic', data_path: str = '', preset: str = 'short'):
  """The base every row edits: data section by dataset, DeRes model, the training budget."""
  if preset not in PRESETS:
    raise ValueError(f'--preset={preset!r} is not a preset of this table; choose one of {PRESETS}.')
  if data == 'synthetic':
    c = library_base()
    # 200k/5k/20k rows; small vocabularies and strong 2-4-way interactions (as the scaling
    # study, configs/scaling/synthetic.py), so depth and cross-layer routing can matter.
    c.data.update(name='synthetic', num_train=200_000, num_val=5_000, num_test=20_000,
                  max_vocab=100, std_first=0.5, std_pair=1.2, std_three=1.0, std_four=0.8)
    # Half an epoch: 400 steps of 256 rows (CPU-sized: both tables in about 35 minutes).
    c.train.update(batch_size=256, num_steps=400, log_every=100, progress=False)
    c.optim.update(learning_rate=3e-3, embed_learning_rate=3e-3)
    c.eval.update(every_steps=400, batch_size=4096, restore_best=False)
    if preset == 'converged':
      c.data.num_val = 20_000  # the early-stopping signal: 5k rows move AUC by ~0.005
      c.train.update(num_epochs=12.0, log_every=500)
      c.optim.update(learning_rate=1e-3, embed_learning_rate=1e-2, plateau_factor=0.1)
      c.eval.update(every_epochs=0.5, patience=3, restore_best=True)
  elif data in ('criteo', 'avazu', 'csv'):
    if preset != 'short':
      raise ValueError(f'--preset={preset} applies to --data=synthetic; --data={data} trains with its '
                       "own config's recipe (epochs, early stopping, best-validation parameters).")
    c = _data_config(data)  # the dataset's own preparation and BARS-style training recipe
    if not data_path:
      raise ValueError(f'--data={data} needs --data_path=<directory made by launch/prepare_data.py>.')
    c.data.path = data_path
    c.train.progress = False
  else:
    raise ValueError(f"--data={data!r} is not one of 'synthetic', 'criteo', 'avazu', 'csv'.")
  c.model = models.model_config('transformer', connector='deres', block_size=BLOCK, **SHARED)
  # converged runs last minutes to an hour (mHC): checkpoints every 1,000 steps make a kill cheap
  c.ckpt.update(every_steps=1000 if preset == 'converged' else 0, max_to_keep=1)
  c.baseline.logreg = False
  return c


def _data_config(data: str):
  import os  # pylint: disable=g-import-not-at-top
  from deres_jax.config import load_file  # pylint: disable=g-import-not-at-top
  name = {'criteo': 'criteo', 'avazu': 'avazu', 'csv': 'byo_csv'}[data]
  return load_file(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), f'{name}.py'))


def budget(c) -> str:
  m = c.model
  if c.train.num_epochs:
    recipe = (f'up to {c.train.num_epochs:g} epochs of {c.train.batch_size} rows, validation every '
              f'{c.eval.every_epochs:g} epoch, learning rates x{c.optim.plateau_factor:g} after a '
              f'validation without gain, early stop after {c.eval.patience} without gain, the '
              f'best-validation parameters tested; Adam {c.optim.learning_rate:g} (embeddings '
              f'{c.optim.embed_learning_rate:g})')
  else:
    recipe = (f'{c.train.num_steps} steps of {c.train.batch_size} rows, Adam {c.optim.learning_rate:g}, '
              f'{"best-validation" if c.eval.restore_best else "last-step"} parameters')
  return (f'{recipe}; Transformer family at embed_dim {m.embed_dim}, width {m.width}, '
          f'depth {m.depth} (2 connected sublayers per block), {m.num_tokens} group tokens, '
          f'AttnRes/DeRes block_size {m.block_size} (so the last unit sees the embedding, '
          f'{2 * m.depth // m.block_size - 1} completed blocks and a partial one)')


def connector(kind: str, **fields):
  """A row: the shared CTR Transformer with another residual connector."""
  def edit(c):
    c.model.update(connector=kind, **fields)
    return c
  return edit


def zoo(name: str, **fields):
  """A row: another zoo model, switched from the shared section (same width and depth)."""
  def edit(c):
    c.model = models.switch(c.model, name)
    # Each model keeps its own tokenizer (OneTrans: Auto-Split); RankMixer and TokenMixer-Large
    # keep one head per token (num_heads = 0 means T).
    shared = {k: v for k, v in SHARED.items()
              if k in c.model and k != 'tokenizer' and (k != 'num_heads' or c.model[k])}
    c.model.update(**shared)
    c.model.update(**fields)
    return c
  return edit


def unimixer(c):
  c = zoo('unimixer')(c)
  if c.train.num_epochs:  # epoch budget with early stopping
    if c.data.name == 'synthetic':  # anneal over the first 2 epochs (the row count is known here)
      c.model.anneal_steps = int(2 * c.data.num_train / c.train.batch_size)
    # real data: the model's own anneal_steps (its size is unknown until the data is read)
  else:
    c.model.anneal_steps = c.train.num_steps  # its temperature schedule spans this budget
  return c


ROWS = {
    'DeRes': connector('deres'),
    'PreNorm Transformer': connector('prenorm'),
    'PostNorm Transformer': connector('postnorm'),
    'AttnRes': connector('attnres'),                 # Block AttnRes, softmax over depth
    'Hyper-Connections': connector('hc'),            # dynamic HC, n = 4
    'mHC': connector('mhc'),                         # Sinkhorn-Knopp 20 iterations, n = 4
    'DenseFormer': connector('denseformer'),
    'OneTrans': zoo('onetrans', pyramid_tokens=4),   # Auto-Split tokens, PreNorm, pyramid 8 -> 4
    'RankMixer': zoo('rankmixer'),                   # parameter-free token mixing, post-LN
    'TokenMixer-Large': zoo('tokenmixer_large'),     # mix-and-revert, pSwiGLU, inter-block skips
    'UniMixer': unimixer,                            # Sinkhorn token mixing, SiameseNorm
    'HiFormer': zoo('hiformer'),                     # heterogeneous attention
    'Wukong': zoo('wukong', num_layers=3, num_fmb=8, num_lcb=8, rank=8, fmb_hidden=(128,),
                  head_hidden=(128,)),                # sized into the FLOPs band
    'DCNv2': zoo('dcnv2', num_cross=1, dnn_hidden=(128, 128)),  # sized into the FLOPs band
}

# (claim, row, rows it should beat): checked over paired seeds in the result file.
CLAIMS = [
    ('DeRes beats every baseline (abstract: up to +0.32% AUC)', 'DeRes',
     [r for r in ROWS if r != 'DeRes']),
    ('DeRes beats AttnRes and mHC, the residual baselines the abstract names', 'DeRes',
     ['AttnRes', 'mHC']),
    ('DeRes beats the PreNorm Transformer', 'DeRes', ['PreNorm Transformer']),
]


def extra_lines(rows) -> list:
  """The '< 5% extra FLOPs' claim: DeRes's analytic FLOPs against the PreNorm Transformer's."""
  by = {r['row']: r for r in rows if 'flops_per_example' in r}
  if 'DeRes' not in by or BASELINE not in by:
    return []
  extra = by['DeRes']['flops_per_example'] / by[BASELINE]['flops_per_example'] - 1
  v = 'holds' if extra < 0.05 else 'does not hold'
  return [f'- **DeRes costs under 5% extra FLOPs** — {v}: {100 * extra:+.2f}% FLOPs/example over '
          f'the {BASELINE} (analytic forward counts, models/flops.py).']
