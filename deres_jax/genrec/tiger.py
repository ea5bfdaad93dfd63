"""TIGER retriever (Rajput et al. 2023, Sec. 3.2): encoder-decoder Transformer over semantic IDs.

Input: a hashed user token u = U0 + (user mod num_user_tokens) followed by the SID tokens of
the last 20 history items, left-padded: [pad.., u, s(i_1).., s(i_n)], so the user token sits next
to the history as in TIGER's right-padded T5 input, and with relative positions the encoder's
output at the real tokens does not depend on the amount of padding (tested): a batch can be cut
to its longest history (`TokenLayout.trim`, `data.bucket_items`) without changing the model.
Output (teacher forcing): bos, s_1..s_m of the next item, and the loss is
sum_t -log p(y_t | y_<t, x) over y = (s_1, .., s_m, eos). Token ids:
  0 pad, 1 bos, 2 eos, 3 + offset_l + c for code c at ID position l, then the user tokens,
  then SemanticBPE subwords (if any); the layout is token_layout.py. Variable-length IDs
  (CAPSID) are PAD-filled after eos, and the loss skips PAD targets; in the encoder input their
  tokens sit back to back (`compact`, data.compact_ids), so relative distances count real tokens.
Architecture defaults are TIGER's (4+4 layers, width 128, 6 heads of 64, MLP 1024, ReLU,
dropout 0.1) on pre-LN blocks. Positions (`position`): T5's relative position bias (Raffel et
al. 2020, Sec. 2.1; TIGER is built on T5X, and GRID uses the same): a learned scalar per head
and log-spaced distance bucket added to the attention logits, bidirectional buckets in the
encoder, causal ones in the decoder's self-attention, none in cross-attention, one table per
stack shared by its layers as in T5; or learned absolute position embeddings ('absolute', the
earlier choice). Output (`output`): one softmax over the whole vocabulary ('full'), or over the
codes valid at each decoder position ('levels': position l scores only level l's codes, the
last only eos; GRID's per-level heads up to the shared projection), which needs fixed-length IDs;
or ('positions') over the tokens that occur at position l in the catalogue's IDs, and eos where
an ID ends there: the same restriction for variable-length and SemanticBPE-merged IDs (CAPSID),
equal to 'levels' on a fixed-length catalogue that uses every code (tested). On Beauty's
`cpu_short` table budget, TIGER over RQ-VAE IDs reaches R@10 0.0243 with 'levels' and 0.0175
with 'full' (docs/genrec.md), so a variable-length tokenizer on 'full' starts handicapped.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import math

import numpy as np
import optax

from deres_jax.genrec.token_layout import (  # noqa: F401  (re-exported: tiger.TokenLayout, ...)
    BOS, EOS, FIRST_CODE, PAD, TokenLayout, compact_left, level_mask, position_tokens, token_mask)


def relative_bucket(relative_position, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
  """T5's bucket of each relative position (key position - query position): exact buckets for
  the small distances, log-spaced ones up to `max_distance`, the last bucket beyond; with
  `bidirectional`, half the buckets for keys after the query; else keys after it share bucket 0."""
  rel = np.asarray(relative_position)
  bucket = np.zeros(rel.shape, np.int32)
  if bidirectional:
    num_buckets //= 2
    bucket += (rel > 0).astype(np.int32) * num_buckets
    rel = np.abs(rel)
  else:
    rel = -np.minimum(rel, 0)
  max_exact = num_buckets // 2
  large = max_exact + (np.log(np.maximum(rel, 1) / max_exact) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(np.int32)
  return bucket + np.where(rel < max_exact, rel, np.minimum(large, num_buckets - 1)).astype(np.int32)


class RelativeBias(nn.Module):
  """Position bias [heads, Q, K] of one stack (T5: computed once, shared by the stack's layers)."""
  num_heads: int
  bidirectional: bool
  num_buckets: int = 32
  max_distance: int = 128

  @nn.compact
  def __call__(self, q_len: int, k_len: int):
    buckets = relative_bucket(np.arange(k_len)[None, :] - np.arange(q_len)[:, None], self.bidirectional,
                              self.num_buckets, self.max_distance)   # static [Q, K]
    table = self.param('rel_bias', nn.initializers.normal(0.02), (self.num_buckets, self.num_heads))
    return jnp.transpose(table[buckets], (2, 0, 1))


class Attention(nn.Module):
  """Multi-head attention with an optional additive bias [heads, Q, K] (the position bias).

  `kv` and `attend` split it for decoding with a cache: keys and values are projected once
  (the encoder memory's per batch, each decoder token's once) and queried step by step.
  """
  num_heads: int
  head_dim: int
  width: int
  dropout: float

  def setup(self):
    proj = lambda: nn.DenseGeneral((self.num_heads, self.head_dim))
    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nn.DenseGeneral(self.width, axis=(-2, -1))
    self.drop = nn.Dropout(self.dropout)

  def kv(self, m_bkd):
    """(keys, values) [B, K, heads, head_dim] of the attended sequence."""
    return self.key(m_bkd), self.value(m_bkd)

  def attend(self, x_bqd, k_bkhd, v_bkhd, mask, bias=None, train: bool = False):
    logits = jnp.einsum('bqhd,bkhd->bhqk', self.query(x_bqd), k_bkhd) / math.sqrt(self.head_dim)
    if bias is not None:
      logits = logits + bias[None]
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    w = self.drop(jax.nn.softmax(logits, axis=-1), deterministic=not train)
    return self.out(jnp.einsum('bhqk,bkhd->bqhd', w, v_bkhd))

  def __call__(self, x_bqd, m_bkd, mask, bias=None, train: bool = False):
    return self.attend(x_bqd, *self.kv(m_bkd), mask, bias, train)


class Block(nn.Module):
  """Pre-LN self-attention (optionally cross-attention) and ReLU MLP; `step` decodes one
  position against cached keys and values."""
  num_heads: int
  head_dim: int
  width: int
  mlp_dim: int
  dropout: float
  cross: bool = False

  def setup(self):
    attn = lambda: Attention(self.num_heads, self.head_dim, self.width, self.dropout)
    self.ln_self, self.self_attn = nn.LayerNorm(), attn()
    if self.cross:
      self.ln_cross, self.cross_attn = nn.LayerNorm(), attn()
    self.ln_mlp, self.mlp_in, self.mlp_out = nn.LayerNorm(), nn.Dense(self.mlp_dim), nn.Dense(self.width)
    self.drop = nn.Dropout(self.dropout)

  def _mlp(self, x, train):
    h = self.mlp_out(self.drop(nn.relu(self.mlp_in(self.ln_mlp(x))), deterministic=not train))
    return x + self.drop(h, deterministic=not train)

  def __call__(self, x_btd, self_mask, mem_bsd=None, cross_mask=None, train: bool = False, self_bias=None):
    drop = lambda h: self.drop(h, deterministic=not train)
    h = self.ln_self(x_btd)
    x_btd = x_btd + drop(self.self_attn(h, h, self_mask, self_bias, train))
    if self.cross:
      x_btd = x_btd + drop(self.cross_attn(self.ln_cross(x_btd), mem_bsd, cross_mask, None, train))
    return self._mlp(x_btd, train)

  def step(self, x_n1d, cache, t: int, cross_kv, cross_mask, bias_row=None):
    """Position t of the decoder for N sequences: x [N, 1, d]; cache = (keys, values) [N, T, H, Dh]
    of positions < t (filled here at t); returns (x, cache)."""
    h = self.ln_self(x_n1d)
    k_new, v_new = self.self_attn.kv(h)
    k, v = cache[0].at[:, t].set(k_new[:, 0]), cache[1].at[:, t].set(v_new[:, 0])
    mask = (jnp.arange(k.shape[1]) <= t)[None, None, None, :]
    x_n1d = x_n1d + self.self_attn.attend(h, k, v, mask, bias_row)
    if self.cross:
      x_n1d = x_n1d + self.cross_attn.attend(self.ln_cross(x_n1d), *cross_kv, cross_mask)
    return self._mlp(x_n1d, False), (k, v)


class Tiger(nn.Module):
  """Encoder-decoder over token ids; `__call__(enc, dec_in)` -> logits [B, T, V]."""
  vocab_size: int
  max_enc_len: int          # 1 + history * ID length
  max_dec_len: int          # ID length + 1 (bos ... / ... eos)
  width: int = 128          # model width (TIGER: 128)
  num_heads: int = 6        # attention heads (TIGER: 6)
  head_dim: int = 64        # per-head width (6 x 64 = 384 qkv features)
  mlp_dim: int = 1024       # MLP hidden width (TIGER: 1024)
  enc_depth: int = 4        # encoder layers (TIGER: 4)
  dec_depth: int = 4        # decoder layers (TIGER: 4)
  dropout: float = 0.1      # dropout everywhere (TIGER: 0.1)
  position: str = 'relative'  # 'relative' (T5 bias, TIGER/GRID) | 'absolute' (learned embeddings)
  rel_buckets: int = 32     # T5 relative-position buckets (T5: 32)
  rel_max_distance: int = 128  # distance beyond which positions share the last bucket (T5: 128)
  output: str = 'levels'    # 'levels' (each position's own codes; fixed-length IDs) | 'positions' | 'full'
  level_offsets: tuple = ()  # from the tokenizer: first token id of each ID position ('levels')
  level_sizes: tuple = ()   # from the tokenizer: codes per ID position ('levels')
  position_tokens: tuple = ()  # from the catalogue: token ids valid at each position ('positions')

  CHOICES = {'position': ('relative', 'absolute'), 'output': ('levels', 'positions', 'full')}

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(1.0))
    if self.position == 'absolute':
      self.enc_pos = self.param('enc_pos', nn.initializers.normal(0.02), (self.max_enc_len, self.width))
      self.dec_pos = self.param('dec_pos', nn.initializers.normal(0.02), (self.max_dec_len, self.width))
    else:
      rel = dict(num_heads=self.num_heads, num_buckets=self.rel_buckets, max_distance=self.rel_max_distance)
      self.enc_bias = RelativeBias(bidirectional=True, **rel)
      self.dec_bias = RelativeBias(bidirectional=False, **rel)
    if self.output == 'levels':
      if not self.level_sizes:
        raise ValueError("model.output='levels' needs the tokenizer's level sizes (fixed-length IDs); "
                         "use output='positions' for variable-length IDs (CAPSID, SemanticBPE).")
      self.out_mask = level_mask(self.level_offsets, self.level_sizes, self.vocab_size)
    elif self.output == 'positions':
      if len(self.position_tokens) != self.max_dec_len:
        raise ValueError(f"model.output='positions' needs the catalogue's tokens of each of the "
                         f'{self.max_dec_len} decoder positions, got {len(self.position_tokens)}.')
      self.out_mask = token_mask(self.position_tokens, self.vocab_size)
    kw = dict(num_heads=self.num_heads, head_dim=self.head_dim, width=self.width, mlp_dim=self.mlp_dim,
              dropout=self.dropout)
    self.enc_blocks = [Block(**kw) for _ in range(self.enc_depth)]
    self.dec_blocks = [Block(**kw, cross=True) for _ in range(self.dec_depth)]
    self.enc_ln, self.dec_ln = nn.LayerNorm(), nn.LayerNorm()
    self.head = nn.Dense(self.vocab_size)
    self.drop = nn.Dropout(self.dropout)

  def _inputs(self, tok_bt, stack: str, train: bool):
    """(token embeddings with absolute positions, or the stack's relative bias [H, T, T])."""
    T = tok_bt.shape[1]
    x, bias = self.embed(tok_bt), None
    if self.position == 'absolute':  # encoder positions count from the right: left padding cut
      table = getattr(self, f'{stack}_pos')   # by `TokenLayout.trim` moves no real token's position
      if T > table.shape[0]:
        raise ValueError(f'{stack} input of {T} tokens is longer than the {table.shape[0]} positions')
      x = x + (table[table.shape[0] - T:] if stack == 'enc' else table[:T])
    else:
      bias = getattr(self, f'{stack}_bias')(T, T)
    return self.drop(x, deterministic=not train), bias

  def encode(self, enc_bs, train: bool = False):
    """Encoder memory [B, S, d] of tokens [B, S] (0 = padding)."""
    x, bias = self._inputs(enc_bs, 'enc', train)
    mask = nn.make_attention_mask(enc_bs > 0, enc_bs > 0)
    for blk in self.enc_blocks:
      x = blk(x, mask, train=train, self_bias=bias)
    return self.enc_ln(x)

  def decode_hidden(self, mem_bsd, enc_bs, dec_bt, train: bool = False):
    """Final decoder states [B, T, d] for decoder inputs [B, T] (causal; COBRA's dense head reads them)."""
    x, bias = self._inputs(dec_bt, 'dec', train)
    self_mask = nn.make_causal_mask(dec_bt)
    cross_mask = nn.make_attention_mask(jnp.ones(dec_bt.shape, bool), enc_bs > 0)
    for blk in self.dec_blocks:
      x = blk(x, self_mask, mem_bsd, cross_mask, train=train, self_bias=bias)
    return self.dec_ln(x)

  def decode(self, mem_bsd, enc_bs, dec_bt, train: bool = False):
    """Next-token logits [B, T, V] for decoder inputs [B, T] (causal); with output 'levels' or 'positions' the
    tokens not valid at a position get the lowest logit (their probability is 0)."""
    return self.logits(self.decode_hidden(mem_bsd, enc_bs, dec_bt, train))

  def logits(self, hidden_btd):
    """Token logits [B, T, V] of decoder states [B, T, d] (tokens not valid at a position: -1e9)."""
    logits = self.head(hidden_btd)
    if self.output != 'full':  # finite, so beam-score sums stay finite
      logits = jnp.where(self.out_mask[:hidden_btd.shape[1]], logits, -1e9)
    return logits

  def __call__(self, enc_bs, dec_bt, train: bool = False):
    return self.decode(self.encode(enc_bs, train), enc_bs, dec_bt, train)

  # --------------------------------------------------------------- Decoding with a KV cache.
  def cross_kv(self, mem_bsd):
    """Every decoder layer's cross-attention (keys, values) of the encoder memory, projected once."""
    return [blk.cross_attn.kv(mem_bsd) for blk in self.dec_blocks]

  def empty_cache(self, n: int):
    """Self-attention (keys, values) per decoder layer for n sequences, all positions empty."""
    shape = (n, self.max_dec_len, self.num_heads, self.head_dim)
    return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in self.dec_blocks]

  def decode_step(self, cross, cache, enc_bs, tok_n, t: int):
    """Next-token logits [N, V] after decoder input token tok_n [N] at position t, given the
    cache of positions < t; returns (logits, cache). Equals `decode(...)[:, t]` (tested)."""
    x = self.embed(tok_n)[:, None]
    bias_row = None
    if self.position == 'absolute':
      x = x + self.dec_pos[t]
    else:
      bias_row = self.dec_bias(self.max_dec_len, self.max_dec_len)[:, t:t + 1]
    cross_mask = (enc_bs > 0)[:, None, None, :]
    new_cache = []
    for blk, kv, layer_cache in zip(self.dec_blocks, cross, cache):
      x, layer_cache = blk.step(x, layer_cache, t, kv, cross_mask, bias_row)
      new_cache.append(layer_cache)
    logits = self.head(self.dec_ln(x))[:, 0]
    if self.output != 'full':
      logits = jnp.where(self.out_mask[t], logits, -1e9)
    return logits, new_cache


def loss_fn(model: Tiger, params, batch, rng):
  """Teacher-forced token cross-entropy, summed over each ID's tokens and eos, averaged over examples."""
  logits = model.apply({'params': params}, batch['enc'], batch['dec_in'], train=True, rngs={'dropout': rng})
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch['dec_out'])
  w = (batch['dec_out'] != PAD).astype(ce.dtype)   # variable-length IDs: no loss after eos
  loss = (ce * w).sum(1).mean()
  acc = ((logits.argmax(-1) == batch['dec_out']) * w).sum() / jnp.maximum(w.sum(), 1.0)
  return loss, {'train/loss': loss, 'train/token_accuracy': acc}


def make_cached_step(model: Tiger):
  """The (init, step) callbacks of `beam.beam_search_cached` for TIGER.

  init(state) -> cache, with state = (params, memory [B, S, d], encoder tokens [B, S]): the
  cross-attention keys/values of the memory, computed once per batch and repeated per beam, and
  an empty self-attention cache per beam. step(state, cache, tokens [B, K], t) -> (log p
  [B, K, V], cache): one decoder position for every beam.
  """
  def init(state, beam_size):
    params, mem_bsd, enc_bs = state
    cross = model.apply({'params': params}, mem_bsd, method=Tiger.cross_kv)
    rep = lambda x: jnp.repeat(x, beam_size, axis=0)
    empty = model.apply({'params': params}, mem_bsd.shape[0] * beam_size, method=Tiger.empty_cache)
    return {'cross': jax.tree.map(rep, cross), 'self': empty, 'enc': rep(enc_bs)}

  def step(state, cache, tok_bk, t):
    params = state[0]
    B, K = tok_bk.shape
    logits, self_cache = model.apply({'params': params}, cache['cross'], cache['self'], cache['enc'],
                                     tok_bk.reshape(B * K), t, method=Tiger.decode_step)
    return jax.nn.log_softmax(logits).reshape(B, K, -1), dict(cache, self=self_cache)

  return init, step


def make_logprob_fn(model: Tiger):
  """The (state, prefix [B, K, T], t) -> log p [B, K, V] callback of `beam.beam_search`."""
  def logprob_fn(state, prefix_bkt, t):
    params, mem_bsd, enc_bs = state
    B, K, T = prefix_bkt.shape
    # Decoder input: bos then the t tokens chosen so far; positions after t do not matter (causal).
    dec = jnp.concatenate([jnp.full((B, K, 1), BOS, jnp.int32), prefix_bkt[:, :, :T - 1]], 2)
    dec = jnp.where(jnp.arange(T) <= t, dec, PAD).reshape(B * K, T)
    mem = jnp.repeat(mem_bsd, K, axis=0)
    enc = jnp.repeat(enc_bs, K, axis=0)
    logits = model.apply({'params': params}, mem, enc, dec, method=Tiger.decode)[:, t]
    return jax.nn.log_softmax(logits).reshape(B, K, -1)
  return logprob_fn
