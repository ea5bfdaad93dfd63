"""Generative-retrieval stages and tasks: item features -> tokenizer -> (BPE) -> retriever.

  * `tokenizer_stage`: semantic IDs of every item (`config.tokenizer.name` 'rqvae', 'rqkmeans'
    or 'capsid' (variable length)); WORKDIR/tokenizer/ holds sids.npz, stats.json, the code
    vectors and, for RQ-VAE/CAPSID, the parameters; once sids.npz exists the tokenizer is
    loaded, never refitted;
  * `bpe_stage`: optional SemanticBPE merges (`config.bpe`, kept in tokenizer/bpe.npz);
  * the retrievers as tasks: `SASRecTask` (full or sampled softmax on causal windows),
    `TigerTask` (the TIGER encoder-decoder, teacher forcing on sliding windows, trie-constrained
    beam search over the (merged) token strings), `CobraTask` (TIGER + a dense vector after the
    ID, BeamFusion ranking; genrec/cobra.py). Each has `init`, `loss`, `prepare` (training rows
    -> model inputs) and `ranks` (evaluation); genrec/family.py plugs them into the one
    training loop (train/trainer.py).
"""
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from deres_jax.genrec import beam
from deres_jax.genrec import capsid
from deres_jax.genrec import capsid_fit
from deres_jax.genrec import cobra
from deres_jax.genrec import data as data_lib
from deres_jax.genrec import metrics
from deres_jax.genrec import rqkmeans
from deres_jax.genrec import rqvae
from deres_jax.genrec import sasrec
from deres_jax.genrec import semantic_bpe
from deres_jax.genrec import sid
from deres_jax.genrec import tiger
from deres_jax.genrec import tokenizer_stats


def _log(msg):
  if jax.process_index() == 0:
    print(msg, flush=True)


# ----------------------------------------------------------------------------- tokenizer stage
def tokenizer_stage(config, data: data_lib.SequenceData, workdir: str) -> tuple:
  """Fits (or loads) the semantic IDs of every item; returns (SidTable, stats)."""
  directory = os.path.join(workdir, 'tokenizer')
  if os.path.exists(os.path.join(directory, 'sids.npz')):
    _log(f'tokenizer: loading {directory}/sids.npz (finished earlier, not refitted)')
    with open(os.path.join(directory, 'stats.json')) as f:
      return sid.SidTable.load(directory), json.load(f)
  c, t0 = config.tokenizer, time.time()
  x = data_lib.item_features(config, data)                # [N+1, d]
  x = (x - x[1:].mean(0)) / max(float(x[1:].std()), 1e-8)  # centred, unit overall scale
  train_rows = data_lib.training_items(data)              # codebooks see training items only
  item_vecs = x[1:]   # the items as the tokenizer sees them (SemanticBPE 'item_mean'); CAPSID: r_0 below
  if c.name == 'rqkmeans':
    books = rqkmeans.fit(x, c.levels, c.codebook_size, c.kmeans_iters, config.seed, train_rows)
    codes, norms = rqkmeans.encode(x[1:], books)
    extra = {'residual_norm_per_level': [float(v) for v in norms.mean(1)]}
  elif c.name == 'rqvae':
    model = rqvae.RQVAE(input_dim=x.shape[1], hidden=tuple(c.hidden), latent_dim=c.latent_dim,
                        levels=c.levels, codebook_size=c.codebook_size, beta=c.beta)
    params, history = rqvae.fit(model, x, train_rows, c, config.seed, log=_log)
    codes = rqvae.codes_of(model, params, x[1:])
    extra = {'recon_per_levels': [float(v) for v in rqvae.recon_per_level(model, params, x[1:])],
             'final_train': history[-1] if history else {}}
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, 'rqvae_params.npz'),
             **{'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_leaves_with_path(params)})
  elif c.name == 'capsid':
    model = capsid_model(c, x.shape[1])
    params, history = capsid_fit.fit(model, x, train_rows, c, config.seed, log=_log)            # stage 1
    if c.stage2_steps:   # stage 2: the rank-8 routing adapter only, everything else frozen
      params, h2 = capsid_fit.fit(model, x, train_rows, c, config.seed, log=_log, params=params, stage=2)
      history += h2
    routed = capsid_fit.route_items(model, params, x[1:])
    codes, _ = capsid_fit.resolve(routed['tokens_all'], routed['length'], c.collisions)
    final_len = (codes >= 0).sum(1)   # after collision resolution (extension and extra token)
    extra = dict(tokenizer_stats.diagnostics(routed['tokens'], c.codebook_size, x[1:], routed),
                 id_length_hist=np.bincount(final_len).tolist(), mean_id_length=float(final_len.mean()),
                 final_train=history[-1] if history else {})
    books = np.asarray(capsid.squash(params['bias'], c.squash_k))   # capsule centres (the votes at r = 0)
    item_vecs = np.asarray(model.apply({'params': params}, jnp.asarray(x[1:], jnp.float32),
                                       method=capsid.CapsID.encode))   # r_0 = P(x) / |P(x)|
    os.makedirs(directory, exist_ok=True)
    np.savez(os.path.join(directory, 'capsid_params.npz'),
             **{'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_leaves_with_path(params)})
  else:
    raise ValueError(f"tokenizer.name must be 'rqvae', 'rqkmeans' or 'capsid', got {c.name!r}.")
  if c.name == 'capsid':
    stats = dict(tokenizer=c.name, features=config.features.source, fit_seconds=time.time() - t0, **extra)
    sizes = [c.codebook_size] * c.max_levels + [max(int(codes[:, -1].max()) + 1, 1)]
    table = sid.SidTable(np.concatenate([np.full((1, codes.shape[1]), -1, np.int32), codes]), sizes)
  else:
    stats = dict(sid.statistics(codes, [c.codebook_size] * c.levels), tokenizer=c.name,
                 features=config.features.source, fit_seconds=time.time() - t0, **extra,
                 diagnostics=tokenizer_stats.diagnostics(codes, c.codebook_size, x[1:]))
    counts = data.train_count[1:] if c.get('collision_order', 'id') == 'popularity' else None
    table = sid.SidTable.from_codes(codes, [c.codebook_size] * c.levels, counts)
  stats['extra_token_vocab'] = table.level_sizes[-1]
  # Token embeddings (per level and code) and item vectors for SemanticBPE's compatibility term.
  os.makedirs(directory, exist_ok=True)
  np.save(os.path.join(directory, 'item_vectors.npy'), np.asarray(item_vecs, np.float32))
  np.save(os.path.join(directory, 'code_embeddings.npy'), books if c.name != 'rqvae' else
          np.asarray(params['codebooks']))
  table.save(directory, stats)
  _log(f'tokenizer: {stats}')
  return table, stats


def capsid_model(c, input_dim: int) -> capsid.CapsID:
  """The CapsID module named by config.tokenizer (config.py documents each field)."""
  return capsid.CapsID(input_dim=input_dim, hidden=tuple(c.hidden), latent_dim=c.latent_dim,
                       max_levels=c.max_levels, num_capsules=c.codebook_size, iters=c.routing_iters, tau=c.tau,
                       eps=c.eps, squash_k=c.squash_k, residual=c.residual, fixed_length=c.fixed_length,
                       adapter_rank=c.adapter_rank, length_kappa=c.length_kappa)


def bpe_stage(config, data: data_lib.SequenceData, workdir: str, layout: tiger.TokenLayout,
              item_tok: np.ndarray) -> tuple:
  """SemanticBPE merges over the item token table (learned once, kept in WORKDIR/tokenizer/bpe.npz).

  Returns (merges, merged item table [N+1, T'], stats).
  """
  c, path = config.bpe, os.path.join(workdir, 'tokenizer', 'bpe.npz')
  fields = ('pairs', 'freq_hat', 'cos', 'score', 'active')
  if os.path.exists(path):
    with np.load(path) as z:
      merges = semantic_bpe.Merges(int(z['first_new']), *(z[k] for k in fields), keep_prefix=int(z['keep_prefix']),
                                   theta=z['theta'] if 'theta' in z else None)
  else:
    t0 = time.time()
    seqs = [r[r > 0] for r in item_tok[1:]]
    emb, vecs = None, None
    if c.get('embedding', 'item_mean') == 'item_mean':   # e_t: mean item vector of the items holding t
      vpath = os.path.join(workdir, 'tokenizer', 'item_vectors.npy')
      if not os.path.exists(vpath):
        raise FileNotFoundError(f"{vpath} is missing (a tokenizer fitted before bpe.embedding existed): "
                                "refit the tokenizer or set bpe.embedding='centre'.")
      vecs = np.load(vpath)
    elif c.embedding == 'centre':                        # e_t: the code's vector (CAPSID: capsule centre)
      books = np.load(os.path.join(workdir, 'tokenizer', 'code_embeddings.npy'))   # [levels, K, D]
      emb = np.zeros((layout.first_merged, books.shape[-1]), np.float32)
      for l in range(min(len(books), len(layout.level_sizes))):   # code k of level l -> its vector
        emb[layout.offsets[l]:layout.offsets[l] + books.shape[1]] = books[l]
    else:
      raise ValueError(f"bpe.embedding must be 'item_mean' or 'centre', got {c.embedding!r}.")
    weights = None if c.corpus == 'items' else np.maximum(data.train_count[1:], 1)
    merges = semantic_bpe.learn(seqs, layout.first_merged, c.num_merges, emb, c.alpha, c.theta_start, c.theta_end,
                                weights, c.min_count, c.keep_prefix, c.get('theta_rounds') or None, vecs)
    # The merge model is frozen from here; only the gates' biases train (stage 2).
    merges, _ = semantic_bpe.fit_gates(merges, c.gate_steps, c.alpha, c.theta_end, c.warmup_steps,
                                       c.gate_temperature, seed=config.seed)
    tmp = path + '.tmp.npz'   # atomic: a half-written file is never read back as finished
    np.savez(tmp, first_new=merges.first_new, keep_prefix=merges.keep_prefix,
             **{k: getattr(merges, k) for k in fields + ('theta',)})
    os.replace(tmp, path)
    _log(f'semantic bpe: {len(merges.pairs)} merges ({int(merges.active.sum())} gates open) '
         f'in {time.time() - t0:.1f}s')
  merged = semantic_bpe.encode_table(item_tok, merges, c.order)
  lens, base = (merged[1:] > 0).sum(1), (item_tok[1:] > 0).sum(1)
  theta = merges.theta[np.isfinite(merges.theta)]
  stats = {'merges': int(len(merges.pairs)), 'gates_open': int(merges.active.sum()), 'alpha': c.alpha,
           'embedding': c.get('embedding', 'item_mean'), 'order': c.order, 'corpus': c.corpus,
           'keep_prefix': c.keep_prefix, 'item_vocab_before': int(sum(layout.level_sizes)),
           'item_vocab': int(sum(layout.level_sizes) + len(merges.pairs)),   # ID tokens (+ merged subwords)
           'theta_of_merges_max_min': [float(theta.max()), float(theta.min())] if len(theta) else [],
           'tokens_per_item': float(lens.mean()), 'tokens_per_item_before': float(base.mean()),
           'tokens_per_item_hist': np.bincount(lens).tolist(),
           # the tokenizer's definition (share of items whose ID equals another's), on the final IDs
           'collision_rate': tokenizer_stats.collision_rate(merged[1:]),
           'collision_rate_before': tokenizer_stats.collision_rate(item_tok[1:]),
           'distinct_first_tokens': int(len(np.unique(merged[1:, 0]))),
           'distinct_first_tokens_before': int(len(np.unique(item_tok[1:, 0]))),
           # items whose first token is a merged subword (the trie's first level no longer the base one)
           'first_token_merged_share': float((merged[1:, 0] >= merges.first_new).mean()),
           # distinct tokens at each decoder position (the per-position softmax sizes, eos not counted)
           'tokens_per_position': [int(len(np.unique(col[col > 0]))) for col in merged[1:].T],
           'tokens_per_position_before': [int(len(np.unique(col[col > 0]))) for col in item_tok[1:].T]}
  return merges, merged, stats


# ----------------------------------------------------------------------------- tasks
class SASRecTask:
  """Causal windows -> SASRec; full-catalogue scores of the last position."""

  def __init__(self, config, data):
    self.model = sasrec.SASRec(num_items=data.num_items, max_len=data.max_len, **config.model)
    inputs, targets = data_lib.causal_windows(data)
    self.examples = {'inputs': inputs, 'targets': targets}
    self.loss_positions = int(math.ceil(config.train.loss_fraction * config.train.batch_size * data.max_len))
    self.data, self.eval_batch = data, config.eval.batch_size
    self.exclude_history = config.eval.get('exclude_history', False)
    self.latency_ms = []

  def init(self, rng):
    return self.model.init(rng, jnp.zeros((1, self.data.max_len), jnp.int32))['params']

  def loss(self, params, batch, rng, step):
    del step
    return sasrec.loss_fn(self.model, params, batch, rng, self.loss_positions)

  prepare = None  # the windows are the model inputs

  def ranks(self, params, split: str, rows: np.ndarray) -> np.ndarray:
    hist, target = getattr(self.data, f'{split}_hist'), getattr(self.data, f'{split}_target')
    out = []
    for i in range(0, len(rows), self.eval_batch):
      r = rows[i:i + self.eval_batch]
      h = np.pad(hist[r], ((0, self.eval_batch - len(r)), (0, 0)))   # one shape: one compilation
      t0 = time.perf_counter()
      scores = np.asarray(sasrec.jit_last_scores(self.model, params, jnp.asarray(h)))[:len(r)]
      self.latency_ms.append(1000 * (time.perf_counter() - t0) / self.eval_batch)
      if self.exclude_history:
        scores = metrics.drop_history(scores, hist[r], lists=False)
      out.append(metrics.ranks_from_scores(scores, target[r]))
    return np.concatenate(out)


class TigerTask:
  """Sliding windows -> SID tokens -> TIGER; trie-constrained beam search at evaluation."""

  def __init__(self, config, data, table: sid.SidTable, workdir: str):
    # Runs before data.user_token: 'adjacent' since data.bucket_items came in (the same change), else 'first'.
    user_token = config.data.get('user_token', 'adjacent' if 'bucket_items' in config.data else 'first')
    compact = bool(config.data.get('compact_ids', False))   # runs before the field: blocks of the ID width
    self.layout = tiger.TokenLayout(table.level_sizes, config.tokenizer.num_user_tokens, user_token=user_token,
                                    compact=compact)
    self.item_tok = self.layout.item_tokens(table.codes)   # [N+1, m], PAD after variable-length IDs
    self.bpe_stats = None
    if config.bpe.num_merges:  # SemanticBPE: the retriever reads and writes the merged tokens
      merges, self.item_tok, self.bpe_stats = bpe_stage(config, data, workdir, self.layout, self.item_tok)
      self.layout = tiger.TokenLayout(table.level_sizes, config.tokenizer.num_user_tokens, len(merges.pairs),
                                      user_token=user_token, compact=compact)
    # Compaction moves only the PAD inside IDs: a fixed-length catalogue has none, so its batches
    # skip the per-batch sort (the same inputs either way).
    self.layout.compact = compact and bool((self.item_tok[1:] == tiger.PAD).any())
    self.mean_tokens_per_item = float((self.item_tok[1:] > 0).sum(1).mean())
    m = self.item_tok.shape[1]
    sizes = {}
    if config.model.get('output') == 'levels':  # softmax over each position's own codes
      if config.bpe.num_merges or (self.item_tok[1:] == tiger.PAD).any():
        raise ValueError("config.model.output='levels' needs fixed-length IDs; set config.model.output="
                         "'positions' (or 'full') for variable-length IDs (CAPSID, SemanticBPE).")
      sizes = dict(level_offsets=tuple(int(o) for o in self.layout.offsets), level_sizes=self.layout.level_sizes)
    elif config.model.get('output') == 'positions':  # softmax over the tokens the catalogue has at each position
      sizes = dict(position_tokens=tiger.position_tokens(self.item_tok))
    self.model = self._make_model(config, data, vocab_size=self.layout.vocab_size, max_enc_len=1 + data.max_len * m,
                                  max_dec_len=m + 1, **sizes)
    rows, hist, target = data_lib.sliding_windows(data, config.data.get('windows', 'prefix'))
    self.examples = {'user': data.users[rows], 'hist': hist, 'target': target}
    # Length bucketing: batches of one history-length bucket, each cut to its longest history.
    self.bucket_items = int(config.data.get('bucket_items', 0))
    self.buckets = None
    if self.bucket_items:
      self.buckets = -(-(hist > 0).sum(1) // self.bucket_items).astype(np.int32)
    trie = beam.build_trie([r[r > 0] for r in self.item_tok[1:]], np.arange(1, data.num_items + 1), tiger.EOS)
    self.trie, self.trie_arrays = trie, beam.trie_arrays(trie)
    self.logprob_fn = tiger.make_logprob_fn(self.model)
    self.cached_step = tiger.make_cached_step(self.model)
    self.kv_cache = config.eval.get('kv_cache', True)
    self.encode = jax.jit(lambda p, e: self.model.apply({'params': p}, e, method=tiger.Tiger.encode))
    self.data, self.eval_batch, self.beam_size = data, config.eval.batch_size, config.eval.beam_size
    self.exclude_history = config.eval.get('exclude_history', False)
    self.latency_ms, self.decoded, self.incomplete = [], 0, 0

  def _make_model(self, config, data, **sizes):
    return tiger.Tiger(**sizes, **config.model)

  def _beams(self, params, mem, enc):
    """(items, scores, tokens) of the trie-constrained beam search (with a KV cache: eval.kv_cache)."""
    args = (self.trie_arrays, (params, mem, enc), self.eval_batch, self.beam_size, self.trie.max_children,
            self.trie.max_depth)
    if self.kv_cache:
      return beam.beam_search_cached(*self.cached_step, *args)
    return beam.beam_search(self.logprob_fn, *args)

  def _rank(self, params, enc):
    """Top-`beam_size` items [B, K] of encoder inputs [B, S]: the trie-constrained beams, by log-probability."""
    return self._beams(params, self.encode(params, enc), enc)[0]

  def init(self, rng):
    enc = jnp.zeros((1, self.model.max_enc_len), jnp.int32)
    return self.model.init(rng, enc, jnp.zeros((1, self.model.max_dec_len), jnp.int32))['params']

  def loss(self, params, batch, rng, step):
    del step
    return tiger.loss_fn(self.model, params, batch, rng)

  def prepare(self, rows):
    """Training rows {user, hist, target} -> encoder tokens and teacher-forced decoder tokens."""
    return self.layout.training_batch(rows, self.item_tok, self.bucket_items)

  def decode(self, params, users, hist):
    """Top-`beam_size` items [B, K] for histories [B, L] (padded to the eval batch size)."""
    n = len(hist)
    pad = self.eval_batch - n
    enc = self.layout.encoder_input(np.pad(users, (0, pad)), np.pad(hist, ((0, pad), (0, 0))), self.item_tok)
    enc = jnp.asarray(enc)
    t0 = time.perf_counter()
    items = np.asarray(self._rank(params, enc))
    self.latency_ms.append(1000 * (time.perf_counter() - t0) / self.eval_batch)
    # Item 0 = a beam that could not complete an ID (only when fewer than K exist under it).
    self.decoded, self.incomplete = self.decoded + n * items.shape[1], self.incomplete + int((items[:n] == 0).sum())
    return items[:n]

  def ranks(self, params, split: str, rows: np.ndarray) -> np.ndarray:
    hist, target = getattr(self.data, f'{split}_hist'), getattr(self.data, f'{split}_target')
    out = []
    for i in range(0, len(rows), self.eval_batch):
      r = rows[i:i + self.eval_batch]
      items = self.decode(params, self.data.users[r], hist[r])
      if self.exclude_history:
        items = metrics.drop_history(items, hist[r], lists=True)
      out.append(metrics.ranks_from_lists(items, target[r]))
    return np.concatenate(out)


class CobraTask(TigerTask):
  """TIGER's sparse IDs + a dense vector conditioned on the ID, ranked by BeamFusion (genrec/cobra.py)."""

  def __init__(self, config, data, table: sid.SidTable, workdir: str):
    super().__init__(config, data, table, workdir)
    c = config.cobra
    if c.item_vectors == 'content':  # the tokenizer's item content features, normalised as there
      x = data_lib.item_features(config, data)
      x = (x - x[1:].mean(0)) / max(float(x[1:].std()), 1e-8)
      x[0] = 0.0
    else:
      x = np.zeros((1, 1), np.float32)  # unused by the learned table
    self.content = jnp.asarray(x, jnp.float32)
    self.cobra = c

    def rank(params, enc):
      """(items, scores) [B, beam_size]: BeamFusion of the beams (the export runs the same, genrec_export.py)."""
      mem = self.encode(params, enc)
      return cobra.fuse_beams(self.model, params, mem, enc, self._beams(params, mem, enc), self.item_vectors(params),
                              c, self.beam_size)
    self._jit_rank = jax.jit(rank)

  def _make_model(self, config, data, **sizes):
    return cobra.Cobra(**sizes, **config.model, num_items=data.num_items, dense_dim=config.cobra.dense_dim,
                       item_vectors=config.cobra.item_vectors)

  def item_vectors(self, params):
    """The dense vectors [N+1, D] BeamFusion scores against (the learned table or the content tower's)."""
    return self.model.apply({'params': params}, self.content, method=cobra.Cobra.items)

  def _rank(self, params, enc):
    return self._jit_rank(params, enc)[0]

  def init(self, rng):
    enc = jnp.zeros((1, self.model.max_enc_len), jnp.int32)
    dec = jnp.zeros((1, self.model.max_dec_len), jnp.int32)
    return self.model.init(rng, enc, dec, self.content)['params']

  def loss(self, params, batch, rng, step):
    del step
    return cobra.loss_fn(self.model, params, batch, rng, self.content, self.cobra.dense_weight,
                         self.cobra.temperature)

  def prepare(self, rows):
    return dict(super().prepare(rows), target=rows['target'])
