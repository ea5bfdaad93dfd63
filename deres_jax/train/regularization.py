"""Embedding regularisation with BARS / FuxiCTR semantics (`config.optim.embed_l2`).

FuxiCTR (`BaseModel.regularization_loss`, the code behind the BARS benchmark) adds to the mean
binary cross-entropy of a batch, for every parameter of the embedding layer (categorical
tables and the numeric-field embeddings alike),

    (lambda / p) * ||W||_p^p,     p = 2:   (lambda / 2) * sum of squares of the whole table,

at every step, unnormalised by batch size or table size. `embed_l2_rows='table'` is exactly
that, so BARS coefficients (`embedding_regularizer: 1.e-5` ...) transfer as they are.

`embed_l2_rows='batch'` restricts the categorical tables to the rows the batch looks up, each
distinct row once (the lazy, sparse-gradient variant that TF/DeepCTR-style sparse updates
give): (lambda / 2) * sum over distinct looked-up rows of ||e_r||^2, plus the same term on the
numeric-field embeddings (every batch uses them). Rows a batch does not touch get no decay.

`embed_l2_prior` (> 0) sets lambda = embed_l2_prior / N for N training rows instead: the MAP
objective of a fixed Gaussian prior N(0, 1/embed_l2_prior) on every embedding is
sum_i loss_i + (embed_l2_prior / 2) ||E||^2, which divided by N is the mean loss above with
lambda = embed_l2_prior / N. One prior then regularises a 100k-row log ten times as strongly as
a 1M-row one (docs/quality.md, eighth round: why one fixed lambda cannot suit both).

The embedding parameters are the leaves named in `EMBED_PARAMS` (the tokenizer's and logistic
regression's); the padding rows at the end of a table (fewer than `table_pad`) are counted,
being part of the table, but never receive a data gradient.
"""
import jax
import jax.numpy as jnp

from deres_jax.models.tokenizer import table_layout

TABLE = 'embedding'  # the shared categorical table [sum(vocab) padded, E]
# Numeric-field embeddings (tokenizer) and the dense weights of logistic regression.
DENSE_EMBED = ('dense_scale', 'dense_bias', 'dense_missing', 'dense_weight')
EMBED_PARAMS = (TABLE,) + DENSE_EMBED


def effective_embed_l2(optim, num_train_rows: int) -> float:
  """lambda of the embedding penalty: `optim.embed_l2`, or `optim.embed_l2_prior` / N when set."""
  prior = optim.get('embed_l2_prior', 0.0)
  if prior and optim.embed_l2:
    from deres_jax.config import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError('config.optim.embed_l2_prior sets the embedding L2 from the data size; set it or '
                      'config.optim.embed_l2, not both (--config.optim.embed_l2=0 to use the prior, '
                      '--config.optim.embed_l2_prior=0 for a fixed lambda).')
  if prior:
    return float(prior) / max(int(num_train_rows), 1)
  return float(optim.embed_l2)


def _leaf_name(path):
  keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
  return keys[-1] if keys else ''


def embedding_leaves(params):
  """[(name, array)] of the embedding parameters of a model's parameter tree."""
  return [(_leaf_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params)
          if _leaf_name(p) in EMBED_PARAMS]


def distinct_row_ids(cat, vocab_sizes, table_pad: int = 8):
  """(sorted global row ids [B*F], first-occurrence mask [B*F]) of the rows a batch looks up.

  Ids outside a field's vocabulary go to its OOV row 0, as in the tokenizer. Sequence fields
  (the entries of vocab_sizes after cat's F fields) are not counted: their categorical
  fields keep the same offsets, and a history's rows are those of its shared scalar field.
  """
  vocab_sizes = tuple(vocab_sizes)[:cat.shape[-1]]
  offsets, _ = table_layout(vocab_sizes, table_pad)
  ids = cat.astype(jnp.int32)
  ids = jnp.where((ids < 0) | (ids >= jnp.asarray(vocab_sizes, jnp.int32)), 0, ids)
  rows = jnp.sort((ids + jnp.asarray(offsets)).reshape(-1))
  first = jnp.concatenate([jnp.ones((1,), bool), rows[1:] != rows[:-1]])
  return rows, first


def embed_penalty(params, coeff: float, rows: str = 'table', cat=None, vocab_sizes=(),
                  table_pad: int = 8):
  """(coeff / 2) * the squared norm of the embedding parameters (module docstring)."""
  total = jnp.zeros((), jnp.float32)
  distinct = None
  if rows == 'batch' and vocab_sizes:
    distinct = distinct_row_ids(cat, vocab_sizes, table_pad)
  for name, w in embedding_leaves(params):
    w = w.astype(jnp.float32)
    if name == TABLE and rows == 'batch':
      if distinct is None:
        continue
      ids, first = distinct
      total = total + jnp.sum(jnp.where(first[:, None], jnp.take(w, ids, axis=0), 0.0) ** 2)
    else:
      total = total + jnp.sum(w * w)
  return 0.5 * coeff * total
