"""Feature tokenizer: dense and categorical fields -> T tokens of width D.

Input batch (see `deres_jax/data/schema.py`):
  dense: float [B, F_dense], NaN marks a missing value;
  cat:   int   [B, F_cat], id 0 of every field is its out-of-vocabulary / missing row;
  seq:   int   [B, F_seq, L] (optional) behaviour sequences, -1 = padding.

All categorical fields share one concatenated embedding table [sum(vocab), E] with a
per-field row offset, so a lookup is a single gather and the table has a single 'vocab'
row axis that the mesh can shard (`config.sharding_rules`).

Sequence fields (`seq_share` non-empty: the last len(seq_share) entries of `vocab_sizes`)
look up the same table: a field that shares a categorical field's vocabulary (history items
with `item_id`) uses that field's rows, the others get rows of their own. Every model sees
each sequence as one more field, its pooled view, the masked mean over the valid positions
    pool(s) = sum_j m_j e(s_j) / max(1, sum_j m_j),   m_j = [s_j != padding]
(an empty history pools to the zero vector), so the whole zoo runs on sequence data;
history-aware models (DIN, OneTrans with S-tokens) read the per-position embeddings from
`aux['seq_emb']` / `aux['seq_mask']` (`keep_sequences=True`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from deres_jax.models import layers

VOCAB = 'vocab'


def split_fields(vocab_sizes, seq_share):
  """(categorical vocab sizes, sequence vocab sizes) of a model's `vocab_sizes`."""
  n = len(vocab_sizes) - len(seq_share)
  return tuple(vocab_sizes[:n]), tuple(vocab_sizes[n:])


def seq_layout(vocab_sizes, seq_share, pad_to: int = 8):
  """Row offsets of categorical fields, of sequence fields, and the table's padded rows.

  A sequence field sharing categorical field c (seq_share[f] = c >= 0) starts at c's offset;
  one with a vocabulary of its own (-1) gets rows after all categorical fields.
  """
  cat, seq = split_fields(vocab_sizes, seq_share)
  own = [v for v, s in zip(seq, seq_share) if s < 0]
  offsets, total = table_layout(cat + tuple(own), pad_to)
  cat_off, nxt, seq_off = offsets[:len(cat)], iter(offsets[len(cat):]), []
  for s in seq_share:
    seq_off.append(cat_off[s] if s >= 0 else next(nxt))
  return cat_off, np.asarray(seq_off, np.int32), total


def lookup(table, batch, vocab_sizes, seq_share=(), pad_to: int = 8):
  """Field embeddings from the shared table: categorical fields, then pooled sequences.

  Args:
    table: [rows, E] the shared table laid out by `seq_layout`.
    batch: {'cat': int [B, F_cat], 'seq': int [B, F_seq, L]} ('seq' only if seq_share).
    vocab_sizes: rows per field, categorical then sequence fields.
    seq_share: per sequence field, the categorical field it shares rows with, or -1.
    pad_to: the table's row padding.
  Returns:
    (emb [B, F_cat + F_seq, E] float32, seq_emb [B, F_seq, L, E] or None, seq_mask [B, F_seq, L]
    bool or None).
  """
  cat_sizes, seq_sizes = split_fields(vocab_sizes, seq_share)
  cat_off, seq_off, _ = seq_layout(vocab_sizes, seq_share, pad_to)
  out, seq_emb, mask = [], None, None
  if cat_sizes:
    ids = batch['cat'].astype(jnp.int32)  # [B, F_cat]
    ids = jnp.where((ids < 0) | (ids >= jnp.asarray(cat_sizes, jnp.int32)), 0, ids)  # unseen -> OOV row
    out.append(jnp.take(table, ids + jnp.asarray(cat_off), axis=0))
  if seq_share:
    if 'seq' not in batch:
      raise ValueError(f'the model was built for {len(seq_share)} sequence fields but the batch has '
                       "no 'seq' column (int [B, F_seq, L], -1 = padding; see data/sequences.py)")
    seq = batch['seq'].astype(jnp.int32)  # [B, F_seq, L]
    if seq.shape[1] != len(seq_share):
      raise ValueError(f"batch['seq'] has {seq.shape[1]} sequence fields, the model {len(seq_share)}")
    mask = seq >= 0
    vocab = jnp.asarray(seq_sizes, jnp.int32)[:, None]
    ids = jnp.where(mask & (seq < vocab), seq, 0)
    seq_emb = jnp.take(table, ids + jnp.asarray(seq_off)[:, None], axis=0)  # [B, F_seq, L, E]
    m = mask[..., None].astype(seq_emb.dtype)
    out.append(jnp.sum(seq_emb * m, axis=2) / jnp.maximum(jnp.sum(m, axis=2), 1.0))
  return jnp.concatenate(out, axis=1), seq_emb, mask


def table_layout(vocab_sizes, pad_to: int = 8):
  """Row offsets of each field in the shared table and its padded total row count."""
  offsets = np.concatenate([[0], np.cumsum(vocab_sizes)[:-1]]).astype(np.int32)
  total = int(np.sum(vocab_sizes))
  total = -(-total // pad_to) * pad_to  # pad so the rows split evenly over a 'model' axis
  return offsets, total


class FeatureTokenizer(nn.Module):
  """Embeds every field and forms T tokens of width D.

  mode='field': one token per field (T = F_dense + F_cat); field embeddings of size E are
    projected to D by a token-specific linear map when E != D.
  mode='group': RankMixer tokenization: concatenate all field embeddings, split the
    [F*E] vector into `num_tokens` equal groups and project each group to D with its own
    weights.
  mode='autosplit': OneTrans's Auto-Split tokenizer, split(Dense(concat(all fields)), T):
    one dense layer [F*E] -> [T*D], reshaped into T tokens (research/deres.md §4.1).
  """
  vocab_sizes: tuple            # rows per categorical field, OOV row (id 0) included
  num_dense: int                # number of dense fields
  embed_dim: int                # E: per-field embedding size
  width: int                    # D: token width
  mode: str = 'field'           # 'field' | 'group'
  num_tokens: int = 8           # T for mode='group'
  dense_transform: str = 'log1p'  # 'log1p': sign(x) log(1+|x|) before embedding; 'none'
  table_pad: int = 8            # pad the table's rows to a multiple of this
  dtype: Any = jnp.float32
  cross_layers: int = 0         # DCNv2 cross layers on x0 = concat(field embeddings) before tokens
  seq_share: tuple = ()         # per sequence field (the last entries of vocab_sizes): shared cat field or -1
  keep_sequences: bool = False  # also return the per-position sequence embeddings in aux

  @nn.compact
  def __call__(self, batch):
    """Returns (tokens [B, T, D], aux) with aux['embed_sq'] [B]: squared norm of field embeddings."""
    fields = []  # each [B, F_x, E]
    if self.num_dense:
      x = batch['dense'].astype(jnp.float32)  # [B, F_dense]
      missing = jnp.isnan(x)
      x = jnp.where(missing, 0.0, x)
      if self.dense_transform == 'log1p':
        x = jnp.sign(x) * jnp.log1p(jnp.abs(x))
      shape = (self.num_dense, self.embed_dim)
      init = nn.initializers.normal(0.05)
      w = self.param('dense_scale', init, shape, jnp.float32)
      b = self.param('dense_bias', init, shape, jnp.float32)
      m = self.param('dense_missing', init, shape, jnp.float32)  # learned missing-value embedding
      e = x[..., None] * w + b
      fields.append(jnp.where(missing[..., None], m, e))
    seq_emb = seq_mask = None
    if self.vocab_sizes:
      _, _, total = seq_layout(self.vocab_sizes, self.seq_share, self.table_pad)
      table = self.param('embedding', nn.with_logical_partitioning(
          nn.initializers.normal(0.05), (VOCAB, layers.EMBED)), (total, self.embed_dim), jnp.float32)
      emb, seq_emb, seq_mask = lookup(table, batch, self.vocab_sizes, self.seq_share, self.table_pad)
      fields.append(emb)
    emb = jnp.concatenate(fields, axis=1)  # [B, F, E]
    aux = {'embed_sq': jnp.sum(jnp.square(emb), axis=(1, 2))}
    if self.keep_sequences and seq_emb is not None:
      aux['seq_emb'], aux['seq_mask'] = seq_emb, seq_mask
    emb = emb.astype(self.dtype)
    b, f, e = emb.shape
    if self.cross_layers:  # x_{l+1} = x0 * (W_l x_l + b_l) + x_l (DCNv2 Eq. 1), then tokens of x_L
      x0 = emb.reshape(b, f * e)
      x = x0
      for i in range(self.cross_layers):
        x = x0 * nn.Dense(f * e, dtype=self.dtype, name=f'cross_{i}')(x) + x
      emb = x.reshape(b, f, e)
    if self.mode == 'field':
      if e == self.width:
        return emb, aux
      return _project(self.width, self.dtype, emb), aux
    if self.mode == 'group':
      flat = emb.reshape(b, f * e)
      pad = -(f * e) % self.num_tokens
      flat = jnp.pad(flat, ((0, 0), (0, pad)))
      groups = flat.reshape(b, self.num_tokens, (f * e + pad) // self.num_tokens)
      return _project(self.width, self.dtype, groups), aux
    if self.mode == 'autosplit':
      flat = nn.Dense(self.num_tokens * self.width, dtype=self.dtype, name='autosplit')(
          emb.reshape(b, f * e))
      return flat.reshape(b, self.num_tokens, self.width), aux
    raise ValueError(f"tokenizer mode must be 'field', 'group' or 'autosplit', got {self.mode!r}")

  def num_output_tokens(self) -> int:
    return self.num_dense + len(self.vocab_sizes) if self.mode == 'field' else self.num_tokens

  def flops(self) -> int:
    """Forward FLOPs per example of the projections to width D (the lookups cost none)."""
    f = self.num_dense + len(self.vocab_sizes)
    cross = self.cross_layers * 2 * (f * self.embed_dim) ** 2
    return cross + self._project_flops(f)

  def _project_flops(self, f) -> int:
    if self.mode == 'field':
      return 0 if self.embed_dim == self.width else 2 * f * self.embed_dim * self.width
    if self.mode == 'group':
      return 2 * (f * self.embed_dim + (-(f * self.embed_dim) % self.num_tokens)) * self.width
    return 2 * f * self.embed_dim * self.num_tokens * self.width


def _project(width, dtype, x):
  """Token-specific projection of x [B, T, E] to [B, T, width] (TokenDense is token-major)."""
  y = layers.TokenDense(width, True, dtype=dtype, name='project')(x.transpose(1, 0, 2))
  return y.transpose(1, 0, 2)
