"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over item ids, full or sampled softmax.

  E_t = sqrt(d) * M_{s_t} + P_t           (item + learned position embedding, padding -> 0)
  H   = LN(Block_depth(...Block_1(E)))    (pre-LN blocks: x + Drop(MHA_causal(LN x)),
                                           x + Drop(FFN(LN x)), FFN = GELU MLP of 4d... `mlp_mult`)
  r_t(i) = <H_t, M_i>                     (scores tied to the input embedding, Eq. 7)
  loss = -log softmax_i r_t(i)[s_{t+1}]   over the FULL catalogue (`loss='full'`, default),
averaged over the non-padded positions. The bar a generative retriever is compared with.
`loss='sampled'`: the softmax runs over the target and `num_negatives` items drawn uniformly
from 1..N once per step and shared by the batch (a uniform proposal needs no logQ
correction); a negative equal to the row's target is masked out (an accidental hit).
Evaluation always scores the full catalogue.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class SASRec(nn.Module):
  """Next-item scores for every position of a left-padded item sequence."""
  num_items: int          # N; ids 1..N, 0 = padding
  max_len: int = 20       # L, history length
  width: int = 64         # d, embedding and hidden width
  depth: int = 2          # self-attention blocks
  num_heads: int = 1      # SASRec uses one head
  mlp_mult: int = 1       # FFN hidden = mlp_mult * d (SASRec's point-wise FFN is d -> d -> d)
  dropout: float = 0.2    # embeddings, attention output and FFN
  loss: str = 'full'      # 'full' softmax over every item | 'sampled' (uniform shared negatives)
  num_negatives: int = 256  # negatives per step when loss='sampled'

  def setup(self):
    self.item_embed = nn.Embed(self.num_items + 1, self.width,
                               embedding_init=nn.initializers.normal(self.width ** -0.5))
    self.pos_embed = self.param('pos_embed', nn.initializers.normal(0.02), (self.max_len, self.width))
    self.attn = [nn.MultiHeadDotProductAttention(self.num_heads, dropout_rate=self.dropout)
                 for _ in range(self.depth)]
    self.ln_attn = [nn.LayerNorm() for _ in range(self.depth)]
    self.ln_mlp = [nn.LayerNorm() for _ in range(self.depth)]
    self.mlp_in = [nn.Dense(self.mlp_mult * self.width) for _ in range(self.depth)]
    self.mlp_out = [nn.Dense(self.width) for _ in range(self.depth)]
    self.ln_out = nn.LayerNorm()
    self.drop = nn.Dropout(self.dropout)

  def __call__(self, seq_bl, train: bool = False):
    """Hidden states [B, L, d]; position t summarises items up to t (causal)."""
    valid_bl = seq_bl > 0
    x_bld = self.item_embed(seq_bl) * self.width ** 0.5 + self.pos_embed[-seq_bl.shape[1]:]
    x_bld = self.drop(x_bld * valid_bl[..., None], deterministic=not train)
    # Causal mask AND key-is-not-padding; a left-padded row's padded queries see nothing
    # useful, their outputs are never scored.
    mask = nn.combine_masks(nn.make_causal_mask(seq_bl), nn.make_attention_mask(valid_bl, valid_bl))
    for i in range(self.depth):
      h = self.attn[i](self.ln_attn[i](x_bld), mask=mask, deterministic=not train)
      x_bld = x_bld + self.drop(h, deterministic=not train)
      h = self.mlp_out[i](nn.gelu(self.mlp_in[i](self.ln_mlp[i](x_bld))))
      x_bld = (x_bld + self.drop(h, deterministic=not train)) * valid_bl[..., None]
    return self.ln_out(x_bld)

  def scores(self, hidden_nd):
    """Scores of every item id (column 0 = padding) for hidden states [n, d] -> [n, N+1]."""
    return self.item_embed.attend(hidden_nd)


def loss_fn(model: SASRec, params, batch, rng, loss_positions: int):
  """Full-softmax cross-entropy over the non-padded target positions of a batch.

  batch: 'inputs' [B, L], 'targets' [B, L] (0 = no loss). Only `loss_positions` positions are
  scored (the valid ones first, by a stable sort) so the [n, N+1] logits are not spent on
  padding; positions beyond the valid count are masked out.
  """
  hidden = model.apply({'params': params}, batch['inputs'], train=True, rngs={'dropout': rng})
  h_nd, t_n = hidden.reshape(-1, hidden.shape[-1]), batch['targets'].reshape(-1)
  take = jnp.argsort(t_n == 0, stable=True)[:loss_positions]
  h_nd, t_n = h_nd[take], t_n[take]
  if model.loss == 'sampled':
    ce = _sampled_ce(model, params, h_nd, t_n, jax.random.fold_in(rng, 1))
  else:
    logits = model.apply({'params': params}, h_nd, method=SASRec.scores)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, t_n)
  w = (t_n > 0).astype(jnp.float32)
  loss = (ce * w).sum() / jnp.maximum(w.sum(), 1.0)
  return loss, {'train/loss': loss, 'train/positions': w.sum(),
                'train/dropped_positions': (batch['targets'] > 0).sum() - w.sum()}


def _sampled_ce(model: SASRec, params, h_nd, t_n, rng):
  """-log softmax over [target, K uniform negatives shared by the batch], accidental hits masked."""
  neg_k = jax.random.randint(rng, (model.num_negatives,), 1, model.num_items + 1)
  table = params['item_embed']['embedding']                     # [N+1, d]
  pos_n = jnp.einsum('nd,nd->n', h_nd, table[t_n])
  neg_nk = jnp.einsum('nd,kd->nk', h_nd, table[neg_k])
  neg_nk = jnp.where(neg_k[None, :] == t_n[:, None], -jnp.inf, neg_nk)
  logits = jnp.concatenate([pos_n[:, None], neg_nk], 1)
  return -jax.nn.log_softmax(logits, axis=-1)[:, 0]


def last_scores(model: SASRec, params, hist_bl):
  """Scores [B, N+1] of the next item after left-padded histories (the last position)."""
  hidden = model.apply({'params': params}, hist_bl, train=False)
  return model.apply({'params': params}, hidden[:, -1], method=SASRec.scores)


jit_last_scores = jax.jit(last_scores, static_argnums=0)
