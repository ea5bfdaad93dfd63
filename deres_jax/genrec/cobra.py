"""COBRA-style sparse-dense retrieval (Yang et al., "Sparse Meets Dense", arXiv 2503.02453), reconstructed.

COBRA generates a sparse semantic ID, then a dense vector conditioned on it, and ranks items by
BeamFusion. Here (no official code; every open choice is a `config.cobra` field):
  * sparse: the TIGER encoder-decoder (tiger.py) over RQ-VAE / RQ-KMeans IDs, trained with its
    token cross-entropy and decoded by the trie-constrained beam search (beam.py);
  * dense: v = W h_n, a linear head on the final decoder state h_n at the position that reads the
    last ID token (so v sees the user history and the whole sparse ID);
  * item vectors a_j: `item_vectors='learned'` (a free [N+1, D] table) or 'content' (a learned
    linear tower over the tokenizer's fixed item content features), trained jointly;
  * dense loss: in-batch softmax over cos(v_i, a_j) / temperature (items equal to the target
    are masked out as negatives), added to the token loss with weight `dense_weight`;
  * BeamFusion (COBRA Sec. 3.3: Softmax(tau phi_ID) x Softmax(psi cos(v, a)), in log form):
      score(b, a) = (1 - w) log softmax_b(beam log-prob)_b + w psi cos(v_b, a),
    an item's score is the max over beams b; candidates are each beam's own item
    (`candidates='beam'`: fusion re-ranks the beams) or every catalogue item
    (`candidates='ann'`: COBRA's ANN step done exhaustively, so it is exact).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from deres_jax.genrec import tiger


class Cobra(tiger.Tiger):
  """TIGER plus a dense head on the decoder state and an item tower (module docstring)."""
  num_items: int = 0                 # N; item ids 1..N, 0 = padding
  dense_dim: int = 64                # D, width of generated and item dense vectors
  item_vectors: str = 'learned'      # 'learned' (free table) | 'content' (linear tower over content features)

  def setup(self):
    super().setup()
    self.dense_head = nn.Dense(self.dense_dim)
    if self.item_vectors == 'learned':
      self.item_table = nn.Embed(self.num_items + 1, self.dense_dim, embedding_init=nn.initializers.normal(0.1))
    else:
      self.item_tower = nn.Dense(self.dense_dim)

  def dense(self, hidden_bd):
    """Generated dense vectors [..., D] from decoder states [..., d]."""
    return self.dense_head(hidden_bd)

  def items(self, content_nf):
    """Dense vectors [N+1, D] of every item (content_nf [N+1, F]; ignored when 'learned')."""
    if self.item_vectors == 'learned':
      return self.item_table.embedding
    return self.item_tower(content_nf)

  def __call__(self, enc_bs, dec_bt, content_nf, train: bool = False):
    """(token logits [B, T, V], generated vectors at every position [B, T, D], item vectors [N+1, D])."""
    hidden = self.decode_hidden(self.encode(enc_bs, train), enc_bs, dec_bt, train)
    return self.logits(hidden), self.dense(hidden), self.items(content_nf)


def _unit(x, eps: float = 1e-8):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def loss_fn(model: Cobra, params, batch, rng, content_nf, dense_weight: float, temperature: float):
  """Token cross-entropy (TIGER) + dense_weight * in-batch softmax of the generated vector vs item vectors."""
  logits, dense_btd, items_nd = model.apply({'params': params}, batch['enc'], batch['dec_in'], content_nf,
                                            train=True, rngs={'dropout': rng})
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['dec_out'])
  w = (batch['dec_out'] != tiger.PAD).astype(ce.dtype)
  token_loss = (ce * w).sum(1).mean()
  # The state that reads the last ID token (dec_in = bos, s_1..s_n, PAD...): index n.
  last = (batch['dec_in'] != tiger.PAD).sum(1) - 1
  v_bd = _unit(jnp.take_along_axis(dense_btd, last[:, None, None], axis=1)[:, 0])
  a_bd = _unit(items_nd[batch['target']])
  sim = v_bd @ a_bd.T / temperature
  # A batch may hold the same target twice: that copy is not a negative.
  same = (batch['target'][:, None] == batch['target'][None, :]) & ~jnp.eye(len(last), dtype=bool)
  dense_loss = optax.softmax_cross_entropy_with_integer_labels(jnp.where(same, -1e9, sim), jnp.arange(len(last)))
  dense_loss = dense_loss.mean()
  loss = token_loss + dense_weight * dense_loss
  return loss, {'train/loss': loss, 'train/token_loss': token_loss, 'train/dense_loss': dense_loss}


def beam_fusion(beam_logp_bk, beam_vec_bkd, beam_item_bk, item_vec_nd, weight: float, cos_scale: float,
                top_k: int, candidates: str = 'ann'):
  """BeamFusion ranking (module docstring).

  Args:
    beam_logp_bk: beam log-probabilities [B, K] (-inf for a beam that found no ID).
    beam_vec_bkd: generated dense vector of each beam [B, K, D].
    beam_item_bk: the item each beam's sparse ID names [B, K] (0 = none).
    item_vec_nd: item dense vectors [N+1, D] (row 0 = padding, never returned).
    weight: w in [0, 1]; 0 ranks by beam probability only, 1 by cosine only.
    cos_scale: psi, the scale of the cosine (the dense loss's 1 / temperature puts it on the
      scale of the trained logits).
    top_k: length of the returned lists.
    candidates: 'beam' (each beam's own item) or 'ann' (every item, scored with every beam).
  Returns:
    items [B, top_k] (0 only when fewer than top_k candidates exist), scores [B, top_k].
  """
  B, K = beam_logp_bk.shape
  live = jnp.isfinite(beam_logp_bk) & (beam_item_bk > 0)
  p_bk = jax.nn.log_softmax(jnp.where(live, beam_logp_bk, -jnp.inf), axis=1)
  p_bk = jnp.where(live, p_bk, -jnp.inf)
  cos_bkn = jnp.einsum('bkd,nd->bkn', _unit(beam_vec_bkd), _unit(item_vec_nd))
  if candidates == 'beam':
    own = jnp.take_along_axis(cos_bkn, beam_item_bk[..., None], axis=2)[..., 0]
    score_bk = jnp.where(live, (1 - weight) * p_bk + weight * cos_scale * own, -jnp.inf)
    per_item = jnp.full((B, item_vec_nd.shape[0]), -jnp.inf).at[jnp.arange(B)[:, None], beam_item_bk].max(score_bk)
  elif candidates == 'ann':
    per_item = ((1 - weight) * p_bk[..., None] + weight * cos_scale * cos_bkn).max(1)
  else:
    raise ValueError(f"cobra.candidates must be 'beam' or 'ann', got {candidates!r}.")
  per_item = per_item.at[:, 0].set(-jnp.inf)
  scores, items = jax.lax.top_k(per_item, top_k)
  return jnp.where(jnp.isfinite(scores), items, 0), scores


def beam_vectors(model: Cobra, params, mem_bsd, enc_bs, tokens_bkt):
  """Generated dense vectors [B, K, D] of finished beams: the decoder reads bos + each beam's ID."""
  B, K, T = tokens_bkt.shape
  ids = jnp.where(tokens_bkt == tiger.EOS, tiger.PAD, tokens_bkt)
  dec = jnp.concatenate([jnp.full((B, K, 1), tiger.BOS, jnp.int32), ids[:, :, :T - 1]], 2).reshape(B * K, T)
  last = (dec != tiger.PAD).sum(1) - 1
  hidden = model.apply({'params': params}, jnp.repeat(mem_bsd, K, axis=0), jnp.repeat(enc_bs, K, axis=0), dec,
                       method=tiger.Tiger.decode_hidden)
  h = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
  return model.apply({'params': params}, h, method=Cobra.dense).reshape(B, K, -1)


def fuse_beams(model: Cobra, params, mem_bsd, enc_bs, beams, item_vec_nd, c, top_k: int):
  """BeamFusion of a trie-constrained beam search: (items [B, top_k], scores [B, top_k]).

  `beams` = (items, log-probs, tokens) of `beam.beam_search(_cached)`; `item_vec_nd` = `Cobra.items`;
  `c` = config.cobra. The one ranking of evaluation (tasks.CobraTask) and of the export
  (serving/genrec_export.py).
  """
  items_bk, logp_bk, tokens_bkt = beams
  vec_bkd = beam_vectors(model, params, mem_bsd, enc_bs, tokens_bkt)
  return beam_fusion(logp_bk, vec_bkd, items_bk, item_vec_nd, c.fusion_weight, c.cos_scale, top_k, c.candidates)
