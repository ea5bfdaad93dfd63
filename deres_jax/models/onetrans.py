"""OneTrans (ByteDance, arXiv 2510.26104, WWW 2026) over non-sequential feature tokens.

research/deres.md §4.1. Tokens: the Auto-Split tokenizer X^(0) = split(MLP(concat(all NS
features)), L_NS) (`tokenizer='autosplit'`; the paper finds it better than group-wise
tokens). Block (pre-norm, RMSNorm on all tokens):
    Z  = MixedMHA(RMSNorm(X)) + X,        X' = MixedFFN(RMSNorm(Z)) + Z,
with the mixed parameterisation: Q/K/V and FFN weights are token-specific for every
non-sequential token (`qkv='token'`, `ffn='token'`). Our CTR data has no behaviour sequences,
so there are no S-tokens and the causal mask between S and NS tokens does not arise (every
NS token attends to every NS token, as between tokens of a set).

Pyramid stacking (`pyramid_tokens` = T_L > 0): in block l only the last T_l tokens issue
queries (keys and values come from all tokens of the block) and only their outputs are kept;
T_l falls linearly from T to T_L over the L blocks (1190 -> 12 in the paper). With an
AttnRes/DeRes connector, the depth sources are truncated to the same surviving (last) tokens
(research/deres.md §7.6 A8; the reconstruction's choice). The pyramid needs unrolled blocks.

OneTrans is `CTRTransformer` with these defaults and the pyramid; any connector applies.
"""
from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models import transformer


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

  def keep_tokens(self) -> tuple:
    t = self.make_tokenizer(name=None).num_output_tokens()
    return pyramid_schedule(t, self.pyramid_tokens, self.depth)

  def make_backbone(self, name='backbone'):
    return backbone_lib.Backbone(
        mixer=layers.SelfAttention, mixer_kw=dict(num_heads=self.num_heads,
                                                  token_specific=self.qkv == 'token'),
        ffn=self.ffn_spec()[0], ffn_kw=self.ffn_spec()[1], keep_tokens=self.keep_tokens(),
        **transformer.backbone_kwargs(self),
        **transformer._naming(name))  # pylint: disable=protected-access

  def check(self):
    super().check()
    if self.pyramid_tokens < 0:
      raise ValueError(f'pyramid_tokens={self.pyramid_tokens} must be >= 0 (0 = no pyramid).')

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens(), self.width
    keep = self.keep_tokens() or (t,) * self.depth
    attn = layers.SelfAttention(self.num_heads, self.qkv == 'token', parent=None)
    cls, kw = self.ffn_spec()
    ffn = cls(**kw, parent=None)
    t_in = (t,) + keep[:-1]  # tokens entering each block
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'attention': sum(attn.flops(a, b, d) for a, b in zip(t_in, keep)),
        'ffn': sum(ffn.flops(b, d) for b in keep),
        'connectors': self.make_backbone(name=None).connector_flops(list(keep), d),
        'head': layers.head_flops(keep[-1] * d if self.head_pool == 'flatten' else d,
                                  self.head_hidden),
    })
