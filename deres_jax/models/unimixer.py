"""UniMixer (Kuaishou, arXiv 2604.00590): learnable doubly stochastic token mixing + SwiGLU.

UniMixer reads RankMixer/TokenMixer's parameter-free shuffle as a fixed matrix acting on the
flattened tokens, X' = reshape(W_perm flatten(X)) with W_perm in R^{TD x TD} a Kronecker
product, doubly stochastic and sparse, and makes it learnable (research/deres.md §4.4):

    UniMixing(X) = reshape((W_G (x) {W_B^i}) flatten(X)),                             (1)

realised here without forming the TD x TD matrix. flatten(X) (per example, token-major: index
t*D + d) is cut into n = T*H blocks of b = D/H (block i = (token t, head h), so H = T gives
TokenMixer's heads, and H = 1 makes every token one block and W_G a T x T token mixing);
W_G in R^{n x n} mixes the blocks and one W_B^i in R^{b x b} per *output* block mixes inside it:

    y_i = W_B^i sum_j W_G[i, j] x_j,                                                  (2)

which is the block row i of (1), blocks (i, j) = W_G[i, j] W_B^i. Each W is built from free
logits L as W = Sinkhorn(exp(((L + L^T) / 2) / tau)), Sinkhorn-Knopp in log space
(`sinkhorn`); a Kronecker-like product of doubly stochastic matrices is doubly stochastic, so
UniMixing is an average-preserving mixing like the shuffle it generalises, free of the H = T
constraint. tau anneals from temp_start = 1.0 (soft, near uniform) to temp_end = 0.05 (nearly
a permutation).

UniMixing-Lite (`lite=True`): W_G = A_G B_G with A_G [n, r], B_G [r, n] (2nr instead of n^2
parameters and FLOPs), and W_B^i = sum_j omega_ij Z_j, convex weights omega_i = softmax over a
shared basis of `lite_basis` doubly stochastic Z_j [b, b].

The block: UniMixing, then the per-token SwiGLU (layers.SwiGLU), wrapped by SiameseNorm
(backbone connector 'siamese', the default; any backbone connector works).

Choices this reconstruction makes (the paper leaves them open or we could not read them):
  * blocks: n = T*H blocks of D/H (field num_heads = H); one W_B^i per output block;
  * annealing is geometric, tau(s) = temp_start (temp_end / temp_start)^min(s / anneal_steps, 1),
    on the train step that `train/step.py` adds to the batch as batch['step']; a batch without
    'step' (init, evaluation with a plain `model.apply`) uses tau(anneal_steps) = temp_end, the
    end-of-annealing mixing (so evaluate trained models after annealing has finished);
  * the mixing logits start at normal(0.1): near-uniform mixing at tau = 1;
  * Lite: A_G and B_G are rectangular, so they are not symmetrised; they are Sinkhorn-scaled to
    row sums 1 and column sums n/r (A_G) and r/n (B_G), which makes A_G B_G doubly stochastic;
    the basis weights omega are a plain softmax (not annealed);
  * tau reaches the mixers as a (traced) attribute in mixer_kw, computed by the model from the
    step, since the backbone passes mixers nothing but x.

FLOPs: the Sinkhorn iterations build the weights once per step, not per example, so
`flops_per_example` leaves them out (they amortise over the batch; XLA counts them once).
"""
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from deres_jax.models import backbone as backbone_lib
from deres_jax.models import flops as flops_lib
from deres_jax.models import layers
from deres_jax.models.tokenizer import FeatureTokenizer
from deres_jax.models.transformer import BACKBONE_CHOICES, _naming, backbone_kwargs


def sinkhorn(logits, num_iters: int, row_sum: float = 1.0, col_sum: float = 1.0):
  """Sinkhorn-Knopp: the matrix exp(logits) rescaled to the given row and column sums.

  Args:
    logits: [..., m, n] log-weights (already divided by the temperature).
    num_iters: row-then-column normalisations; the columns are exact after the last one, the
      rows converge fast for |logits| of a few units but slowly (O(1/iters)) for sharp ones
      (e.g. logits ~ 1 at tau = 0.05: row sums off by 0.05-0.2 after 20 iterations).
    row_sum, col_sum: target sums (m * row_sum must equal n * col_sum); 1, 1 for a square
      doubly stochastic matrix.
  Returns:
    [..., m, n] non-negative matrix, float32.
  """
  # Log space: exp(logits / tau) overflows float32 for tau = 0.05 and logits of a few units.
  log_p = logits.astype(jnp.float32)
  log_r, log_c = jnp.log(row_sum), jnp.log(col_sum)

  def step(_, log_p):
    log_p = log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True) + log_r
    return log_p - jax.nn.logsumexp(log_p, axis=-2, keepdims=True) + log_c

  # A loop, not unrolled: the graph (and compile time) stays flat in num_iters.
  return jnp.exp(jax.lax.fori_loop(0, num_iters, step, log_p))


def anneal_temperature(step, temp_start: float, temp_end: float, anneal_steps: int):
  """Geometric annealing tau(step) from temp_start to temp_end at anneal_steps, then flat.

  step=None (no 'step' in the batch: init, plain evaluation) gives temp_end.
  """
  if step is None or anneal_steps <= 0:
    return temp_end
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / anneal_steps, 0.0, 1.0)
  return temp_start * (temp_end / temp_start) ** frac


def _symmetric(logits):
  return (logits + jnp.swapaxes(logits, -1, -2)) / 2


class UniMixing(nn.Module):
  """Eq. (2) on x [T, B, D]: n = T*H blocks of b = D/H, global W_G and per-block local W_B^i."""
  num_heads: int = 4         # H: blocks per token (b = D/H); H = T is TokenMixer's layout
  sinkhorn_iters: int = 20   # Sinkhorn-Knopp iterations per weight matrix
  temperature: Any = 0.05    # tau: a float or a traced scalar (the model's annealing schedule)
  lite: bool = False         # UniMixing-Lite: low-rank W_G, W_B^i from a shared basis
  lite_rank: int = 8         # r of W_G = A_G B_G (Lite)
  lite_basis: int = 4        # basis matrices Z_j shared by all W_B^i (Lite)
  dtype: Any = jnp.float32

  def weights(self, t: int, d: int):
    """(From __call__.) W_G [n, n] (Lite: the pair A_G [n, r], B_G [r, n]) and W_B [n, b, b]."""
    h, tau, iters = self.num_heads, self.temperature, self.sinkhorn_iters
    n, b = t * h, d // h
    init = nn.initializers.normal(0.1)
    if self.lite:
      r = self.lite_rank
      a_g = sinkhorn(self.param('global_a', init, (n, r)) / tau, iters, 1.0, n / r)
      b_g = sinkhorn(self.param('global_b', init, (r, n)) / tau, iters, 1.0, r / n)
      basis = sinkhorn(_symmetric(self.param('local_basis', init, (self.lite_basis, b, b))) / tau,
                       iters)  # [m, b, b]
      omega = jax.nn.softmax(self.param('local_coef', init, (n, self.lite_basis)), axis=-1)
      return (a_g, b_g), jnp.einsum('im,mkl->ikl', omega, basis)
    w_g = sinkhorn(_symmetric(self.param('global', init, (n, n))) / tau, iters)
    w_b = sinkhorn(_symmetric(self.param('local', init, (n, b, b))) / tau, iters)
    return w_g, w_b

  @nn.compact
  def __call__(self, x):  # [T, B, D] -> [T, B, D]
    t, bsz, d = x.shape
    h = self.num_heads
    w_g, w_b = self.weights(t, d)
    self.sow('intermediates', 'weights', (w_g, w_b))  # for inspection (and the tests)
    xb = x.reshape(t, bsz, h, d // h)  # block (t, h) of flatten(X) per example
    if self.lite:
      a_g, b_g = (w.reshape(t, h, -1).astype(self.dtype) for w in (w_g[0], w_g[1].T))
      z = jnp.einsum('sgr,sbgk->rbk', b_g, xb)   # B_G flatten(X): r blocks [r, B, b]
      z = jnp.einsum('thr,rbk->tbhk', a_g, z)    # A_G (...): back to n blocks
    else:
      w_g = w_g.reshape(t, h, t, h).astype(self.dtype)  # [(t, h), (s, g)]
      z = jnp.einsum('thsg,sbgk->tbhk', w_g, xb)         # global: sum_j W_G[i, j] x_j
    w_b = w_b.reshape(t, h, d // h, d // h).astype(self.dtype)
    y = jnp.einsum('thkl,tbhl->tbhk', w_b, z)            # local: W_B^i (...) per block i
    return y.reshape(t, bsz, d)

  def flops(self, t_in: int, t_out: int, d: int) -> int:
    """Forward FLOPs per example of eq. (2) (the Sinkhorn weights are per step, left out)."""
    del t_out  # = t_in: UniMixing keeps the token count
    n, b = t_in * self.num_heads, d // self.num_heads
    mix = 2 * 2 * n * self.lite_rank * b if self.lite else 2 * n * n * b
    return mix + 2 * n * b * b


class UniMixer(nn.Module):
  """Tokenizer + UniMixer blocks (UniMixing, per-token SwiGLU, SiameseNorm) + head."""
  vocab_sizes: tuple            # categorical rows per field (OOV row 0 included)
  num_dense: int                # dense fields
  seq_share: tuple = ()         # filled from the data: per sequence field, its shared cat field or -1
  # Tokenizer.
  embed_dim: int = 16           # E: embedding size of every field
  tokenizer: str = 'group'      # 'group' (RankMixer groups), 'field' (a token each), 'autosplit'
  num_tokens: int = 8           # T when tokenizer is 'group' or 'autosplit'
  dense_transform: str = 'log1p'  # dense x -> sign(x) log(1+|x|) before embedding; or 'none'
  embed_cross: int = 0          # DCNv2 cross layers on the concatenated embeddings before tokens (docs/quality.md)
  # Backbone.
  depth: int = 2                # L: UniMixer blocks (UniMixing + per-token SwiGLU each)
  width: int = 32               # D: token width
  num_heads: int = 4            # H: mixing blocks of D/H per token (T*H blocks); H = T: TokenMixer
  ffn_mult: int = 2             # SwiGLU hidden size = ffn_mult * width
  sinkhorn_iters: int = 20      # Sinkhorn-Knopp iterations making W_G, W_B doubly stochastic
  temp_start: float = 1.0       # tau at step 0 (soft mixing)
  temp_end: float = 0.05        # tau from anneal_steps on, and without batch['step'] (evaluation)
  anneal_steps: int = 10000     # steps of geometric annealing temp_start -> temp_end (0: temp_end)
  lite: bool = False            # UniMixing-Lite: W_G = A_G B_G low rank, W_B^i from a shared basis
  lite_rank: int = 8            # Lite: rank r of W_G (2*T*H*r parameters instead of (T*H)^2)
  lite_basis: int = 4           # Lite: doubly stochastic basis matrices shared by all W_B^i
  dropout: float = 0.0          # dropout on sublayer outputs
  out_norm: str = 'rms'         # 'rms': RMSNorm on the output tokens; 'none': they keep their scale
  scan_layers: bool = False     # True: nn.scan over stacked blocks (compile time flat in depth)
  # Residual connector (connectors.py, backbone.py, research/deres.md §7.6).
  connector: str = 'siamese'    # 'siamese' (SiameseNorm), 'prenorm', 'postnorm', 'attnres', 'deres'
  layer_unit: str = 'sublayer'  # A1: 'sublayer' = a connector per mixer and FFN; 'block'
  block_size: int = 4           # A2: connected units per AttnRes block (1 = Full AttnRes)
  value: str = 'output'         # A3: a block stores its units' output sum, or 'hidden' (stream h)
  depth_weights: str = 'auto'   # A6: 'auto' (attnres softmax, deres silu), softmax, silu, sigmoid
  pointwise_norm: str = 'num_sources'  # A6: pointwise weights / visible sources, or 'none'
  key_norm: bool = True         # A6: RMSNorm on the keys (never on the values), as in AttnRes
  query: str = 'shared'         # A7: pseudo-query per unit 'shared' by tokens, or per 'token'
  merge: str = 'gated'          # A4: 'gated' g*h + (1-g)*a (default); 'additive' h + a; 'add' h + g*a
  gate: str = 'vector'          # A5: g = sigmoid(theta): 'vector' (R^D), 'scalar' or 'none' (g = 1)
  gate_init: float = 0.0        # A5: initial theta (0 -> g = 0.5)
  # Head.
  head_pool: str = 'flatten'    # 'flatten' the T tokens (T*D) or 'mean'-pool them (D)
  head_hidden: tuple = (256,)   # hidden sizes of the head MLP
  dtype: Any = jnp.float32      # computation dtype (parameters stay float32)
  table_pad: int = 8

  CHOICES: ClassVar[dict] = dict(BACKBONE_CHOICES, out_norm=('rms', 'none'))

  def make_tokenizer(self, name='tokenizer'):
    return FeatureTokenizer(self.vocab_sizes, self.num_dense, self.embed_dim, self.width,
                            self.tokenizer, self.num_tokens, self.dense_transform, self.table_pad,
                            self.dtype, cross_layers=self.embed_cross, seq_share=self.seq_share, **_naming(name))

  def mixer_kwargs(self, temperature) -> dict:
    return dict(num_heads=self.num_heads, sinkhorn_iters=self.sinkhorn_iters,
                temperature=temperature, lite=self.lite, lite_rank=self.lite_rank,
                lite_basis=self.lite_basis)

  def make_backbone(self, temperature=None, name='backbone'):
    temperature = self.temp_end if temperature is None else temperature
    return backbone_lib.Backbone(
        mixer=UniMixing, mixer_kw=self.mixer_kwargs(temperature),
        ffn=layers.SwiGLU, ffn_kw=dict(mult=self.ffn_mult, token_specific=True),
        **backbone_kwargs(self), **_naming(name))

  def temperature(self, step):
    """tau at a train step (None: temp_end); see `anneal_temperature`."""
    return anneal_temperature(step, self.temp_start, self.temp_end, self.anneal_steps)

  @nn.compact
  def __call__(self, batch, train: bool = False):
    emb, aux = self.make_tokenizer()(batch)  # [B, T, D]
    # tau is a traced scalar during training (the step is data), a constant otherwise.
    tau = self.temperature(batch.get('step'))
    out, _ = self.make_backbone(tau)(emb.transpose(1, 0, 2), train)  # token-major [T, B, D]
    logits = layers.MLPHead(self.head_hidden, self.dtype, name='head')(
        layers.pool_tokens(out, self.head_pool))
    return logits.astype(jnp.float32), aux

  def check(self):
    if self.width % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={self.width}: '
                       'UniMixing cuts every token into num_heads blocks of width/num_heads.')
    if self.sinkhorn_iters < 1:
      raise ValueError(f'sinkhorn_iters={self.sinkhorn_iters}: Sinkhorn-Knopp needs at least '
                       'one iteration to make the mixing matrices doubly stochastic.')
    if self.temp_start <= 0 or self.temp_end <= 0 or self.anneal_steps < 0:
      raise ValueError(f'temp_start={self.temp_start} and temp_end={self.temp_end} must be '
                       f'positive and anneal_steps={self.anneal_steps} non-negative.')
    if self.lite and (self.lite_rank < 1 or self.lite_basis < 1):
      raise ValueError(f'lite=True needs lite_rank={self.lite_rank} and '
                       f'lite_basis={self.lite_basis} of at least 1.')
    self.make_backbone(name=None).check()

  def flops_per_example(self) -> dict:
    tok = self.make_tokenizer(name=None)
    t, d = tok.num_output_tokens(), self.width
    mixer = UniMixing(**self.mixer_kwargs(self.temp_end), parent=None)
    ffn = layers.SwiGLU(self.ffn_mult, True, parent=None)
    return flops_lib.total({
        'tokenizer': tok.flops(),
        'mixing': self.depth * mixer.flops(t, t, d),
        'ffn': self.depth * ffn.flops(t, d),
        'connectors': self.make_backbone(name=None).connector_flops([t] * self.depth, d),
        'head': layers.head_flops(t * d if self.head_pool == 'flatten' else d, self.head_hidden),
    })
