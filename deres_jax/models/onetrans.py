"""OneTrans (ByteDance, arXiv 2510.26104, WWW 2026): S-tokens and NS-tokens in one Transformer.

research/deres.md §4.1. Tokens: the Auto-Split tokenizer X^(0) = split(MLP(concat(all NS
features)), L_NS) (`tokenizer='autosplit'`; the paper finds it better than group-wise
tokens). Block (pre-norm, RMSNorm on all tokens):
    Z  = MixedMHA(RMSNorm(X)) + X,        X' = MixedFFN(RMSNorm(Z)) + Z,
with the mixed parameterisation: Q/K/V and FFN weights are token-specific for every
non-sequential token (`qkv='token'`, `ffn='token'`).

S-tokens (`seq_tokens=True` and data with sequence fields, data/sequences.py): one token per
history position j (oldest first, left-padded), S_j = W_s [e_{f,j} for every sequence field f]
+ p_j (a learned position embedding); at a padded position (no field has an element) S_j is
one learned padding token instead, attended to like any S-token rather than masked out (the
backbone hands its mixers tokens only), so the padded ids themselves never matter;
the sequence is [S_1 .. S_L; NS_1 .. NS_m]. Then the blocks use `mixed_tokens.py`: S-tokens
share one set of weights, each NS-token has its own, and S-tokens attend causally (an
S-token never sees a later S-token). The NS-tokens still include the pooled view of each
sequence (tokenizer.py). Without sequence fields (or `seq_tokens=False`) the model is
exactly the NS-only OneTrans (every NS token attends to every NS token, as between tokens
of a set).

Pyramid stacking (`pyramid_tokens` = T_L > 0): in block l only the last T_l tokens issue
queries (keys and values come from all tokens of the block) and only their outputs are kept;
T_l falls linearly from T to T_L over the L blocks (1190 -> 12 in the paper). With an
AttnRes/DeRes connector, the depth sources are truncated to the same surviving (last) tokens
(research/deres.md §7.6 A8; the reconstruction's choice). The pyramid needs unrolled blocks.

With S-tokens the pyramid runs over the whole sequence, T = L + m, and drops the oldest
S-tokens first: `pyramid_tokens=num_tokens` leaves only the NS-tokens after the last block
(the paper's schedule, 1190 -> 12), fewer also drops NS-tokens.

OneTrans is `CTRTransformer` with these defaults and the pyramid; any connector applies.
"""
import flax.linen as nn
import jax.numpy as jnp

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models import mixed_tokens
from deres_jax.models import transformer
from deres_jax.models.tokenizer import FeatureTokenizer


def pyramid_schedule(num_tokens: int, final_tokens: int, depth: int) -> tuple:
  """Tokens kept after each block: linear from num_tokens down to final_tokens at block L."""
  if not final_tokens or final_tokens >= num_tokens:
    return ()
  return tuple(int(round(num_tokens - (num_tokens - final_tokens) * (i + 1) / depth))
               for i in range(depth))


class OneTrans(transformer.CTRTransformer):
  """Auto-Split tokens -> pre-norm mixed-parameter Transformer (optional pyramid) -> head."""
  tokenizer: str = 'autosplit'  # 'autosplit' (OneTrans), 'group' (RankMixer-style) or 'field'
  num_tokens: int = 8           # L_NS: non-sequential tokens
  connector: str = 'prenorm'    # the paper's pre-norm residual; any connector applies
  pyramid_tokens: int = 0       # T_L: tokens left after the last block (0 = no pyramid)
  seq_tokens: bool = True       # S-tokens from the data's sequence fields (False: pooled views only)
  ns_causal: bool = False       # with S-tokens: NS-tokens also causal among themselves (paper leaves it open)
  seq_len: int = 0              # filled from the data: L, S-tokens per example

  def num_s_tokens(self) -> int:
    """S-tokens per example: L when the data has sequence fields and seq_tokens is on."""
    return self.seq_len if self.seq_tokens and self.seq_share else 0

  def keep_tokens(self) -> tuple:
    t = self.make_tokenizer(name=None).num_output_tokens() + self.num_s_tokens()
    return pyramid_schedule(t, self.pyramid_tokens, self.depth)

  def make_tokenizer(self, name='tokenizer'):
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens, self.dense_transform, self.table_pad,
                            self.dtype, cross_layers=self.embed_cross, seq_share=self.seq_share,
                            keep_sequences=bool(self.num_s_tokens()),
                            **transformer._naming(name))  # pylint: disable=protected-access

  def make_backbone(self, name='backbone'):
    if self.num_s_tokens():  # mixed weights and the causal mask over [S; NS] (mixed_tokens.py)
      m = self.make_tokenizer(name=None).num_output_tokens()
      mixer, mixer_kw = mixed_tokens.MixedSelfAttention, dict(
          num_heads=self.num_heads, num_ns=m, token_specific=self.qkv == 'token', ns_causal=self.ns_causal)
      ffn, ffn_kw = mixed_tokens.MixedFeedForward, dict(num_ns=m, mult=self.ffn_mult,
                                                         token_specific=self.ffn == 'token')
    else:
      mixer, mixer_kw = layers.SelfAttention, dict(num_heads=self.num_heads,
                                                   token_specific=self.qkv == 'token')
      ffn, ffn_kw = self.ffn_spec()
    return backbone_lib.Backbone(
        mixer=mixer, mixer_kw=mixer_kw, ffn=ffn, ffn_kw=ffn_kw, keep_tokens=self.keep_tokens(),
        **transformer.backbone_kwargs(self),
        **transformer._naming(name))  # pylint: disable=protected-access

  @nn.compact
  def __call__(self, batch, train: bool = False):
    ns, aux = self.make_tokenizer()(batch)  # [B, m, D]
    if self.num_s_tokens():
      seq_emb, mask = aux.pop('seq_emb'), aux.pop('seq_mask')  # [B, F_seq, L, E], [B, F_seq, L]
      b, f, length, e = seq_emb.shape
      x = seq_emb.transpose(0, 2, 1, 3).reshape(b, length, f * e).astype(self.dtype)
      s = nn.Dense(self.width, dtype=self.dtype, name='seq_project')(x)  # one shared W_s
      pos = self.param('seq_position', nn.initializers.normal(0.02), (length, self.width), jnp.float32)
      pad = self.param('seq_pad', nn.initializers.normal(0.02), (self.width,), jnp.float32)
      valid = jnp.any(mask, axis=1)[..., None]  # [B, L, 1]: a position some field fills
      s = jnp.where(valid, s + pos.astype(self.dtype), pad.astype(self.dtype))
      ns = jnp.concatenate([s, ns.astype(self.dtype)], axis=1)  # [B, L + m, D]
    out, _ = self.make_backbone()(ns.transpose(1, 0, 2), train)
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(
        layers.pool_tokens(out, self.head_pool)).astype(jnp.float32)
    if self.first_order:
      logits = logits + transformer.first_order_logit(self, batch)
    return logits, aux

  def check(self):
    super().check()
    if self.pyramid_tokens < 0:
      raise ValueError(f'pyramid_tokens={self.pyramid_tokens} must be >= 0 (0 = no pyramid).')
    if self.num_s_tokens() and self.ffn_act != 'gelu':
      raise ValueError(f"ffn_act={self.ffn_act!r}: OneTrans with S-tokens has the mixed GELU FFN "
                       "only; set ffn_act='gelu' or seq_tokens=False.")

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    s, d = self.num_s_tokens(), self.width
    t = tok.num_output_tokens() + s
    keep = self.keep_tokens() or (t,) * self.depth
    attn = layers.SelfAttention(self.num_heads, self.qkv == 'token', parent=None)
    cls, kw = self.ffn_spec()
    ffn = cls(**kw, parent=None)
    t_in = (t,) + keep[:-1]  # tokens entering each block
    f_seq = len(self.seq_share)
    return flops_lib.total({
        'tokenizer': tok.flops() + (flops_lib.dense(f_seq * self.embed_dim, d, s) if s else 0),
        'attention': sum(attn.flops(a, b, d) for a, b in zip(t_in, keep)),
        'ffn': sum(ffn.flops(b, d) for b in keep),
        'connectors': self.make_backbone(name=None).connector_flops(list(keep), d),
        'head': layers.head_flops(keep[-1] * d if self.head_pool == 'flatten' else d,
                                  self.head_hidden),
        **transformer.first_order_flops(self),
    })
