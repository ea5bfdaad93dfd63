"""What every multi-scenario model reads: flat field embeddings and checked scenario ids.

Features go through the CTR library's `FeatureTokenizer` (one token per field, width E),
flattened to x [B, F*E], so every model here sees the same inputs as the CTR DNN. Behaviour
sequences (`seq_share` non-empty: the batch's 'seq' [B, F_seq, L], -1 = padding) are fields
too: each is its pooled view, the masked mean of its element embeddings, looked up in the same
table (a history sharing `item_id` reads its rows; models/tokenizer.py). F counts them, so
every model's per-field sizes (gates, attention over fields, FLOPs) include them.
Scenario ids outside [0, S) (a scenario never seen in training is id S by the data
convention) are never used as an index: `scenario_ids` clips them and returns a `known`
mask, and every model multiplies its scenario-specific contribution by that mask, so an
unseen scenario gets the scenario-shared parameters only (counted at evaluation).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models import layers
from deres_jax.models.backbone import Backbone
from deres_jax.models.transformer import CTRTransformer, backbone_kwargs

# Parameters whose path has a key starting with this are counted as scenario-specific.
SCENARIO = 'scenario'


BACKBONES = ('mlp', 'deres')


def features(vocab_sizes, num_dense, embed_dim, dtype, batch, backbone: str = 'mlp', seq_share=()):
  """(x [B, F*E], aux) from the shared CTR tokenizer; call inside a compact module.

  F = num_dense + len(vocab_sizes): the categorical fields, then one pooled field per
  sequence field (the last len(seq_share) entries of vocab_sizes; seq_share[f] is the
  categorical field whose rows sequence f shares, or -1).

  backbone='mlp': x is the flat field embeddings and the model's MLP layers are the whole
  backbone. 'deres': the field tokens first pass through the library's DeRes Transformer
  (deres_jax/models/transformer.py: 2 blocks, width E, 2 heads, Identity + Block AttnRes
  paths, block_size 2), shared by every scenario; x is its flattened output and the model's
  scenario mechanism acts on the MLP layers above it.
  """
  if backbone not in BACKBONES:
    raise ValueError(f'backbone={backbone!r} is not one of {list(BACKBONES)}.')
  if len(seq_share) > len(vocab_sizes):
    raise ValueError(f'seq_share names {len(seq_share)} sequence fields but vocab_sizes has only '
                     f'{len(vocab_sizes)} entries (categorical, then sequence fields)')
  emb, aux = FeatureTokenizer(tuple(vocab_sizes), num_dense, embed_dim, embed_dim, 'field', dtype=dtype,
                              seq_share=tuple(seq_share), name='tokenizer')(batch)  # [B, T, E]
  if backbone == 'deres':
    spec = CTRTransformer(tuple(vocab_sizes), num_dense, tuple(seq_share), embed_dim=embed_dim, depth=2,
                          width=embed_dim, num_heads=2, connector='deres', block_size=2,
                          dtype=dtype, parent=None)  # unbound: only its backbone is built here
    # Built here from the CTR Transformer's fields (calling its methods on an unbound module
    # would push it onto Flax's module stack).
    block = Backbone(mixer=layers.SelfAttention, mixer_kw=dict(num_heads=2, token_specific=True),
                     ffn=layers.FeedForward, ffn_kw=dict(mult=2, token_specific=True),
                     **backbone_kwargs(spec), name='deres_backbone')
    out, _ = block(emb.transpose(1, 0, 2))                                  # [T, B, E]
    emb = out.transpose(1, 0, 2)
  return emb.reshape(emb.shape[0], -1), aux


def scenario_ids(batch, num_scenarios: int):
  """(ids [B] int32 in [0, S), known [B] float32): unseen ids are clipped and masked out."""
  s = batch['scenario'].astype(jnp.int32)
  known = (s >= 0) & (s < num_scenarios)
  return jnp.where(known, s, 0), known.astype(jnp.float32)


class ScenarioEmbed(nn.Module):
  """e_s [B, dim] of a learned table [S, dim]; zeros for an unseen scenario."""
  num_scenarios: int   # S
  dim: int             # embedding size

  @nn.compact
  def __call__(self, ids, known):  # [B], [B]
    table = self.param('embedding_table', nn.initializers.normal(0.1), (self.num_scenarios, self.dim))
    return jnp.take(table, ids, axis=0) * known[:, None]


def one_hot(ids, known, num_scenarios):
  """[B, S] routing weights: one-hot of the scenario, uniform 1/S for an unseen one."""
  oh = jax.nn.one_hot(ids, num_scenarios)
  return jnp.where(known[:, None] > 0, oh, 1.0 / num_scenarios)
