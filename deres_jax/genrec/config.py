"""The genrec config: every field with its default and meaning; `validate()`.

configs/genrec/<data>_<system>.py start from `base_config(system)` and override presets.
"""
import difflib

import ml_collections

from deres_jax import config as ctr_config
from deres_jax import models
from deres_jax.genrec import sasrec
from deres_jax.genrec import tiger

SYSTEMS = ('sasrec', 'tiger', 'cobra')
# Model fields filled from the data (catalogue, history and token sizes) or internal.
NOT_CONFIG = ('num_items', 'max_len', 'vocab_size', 'max_enc_len', 'max_dec_len', 'level_offsets', 'level_sizes',
              'position_tokens', 'parent', 'name')
MONITORS = ('recall@10', 'ndcg@10', 'recall@5', 'ndcg@5')


def sasrec_model() -> ml_collections.ConfigDict:
  """SASRec's fields (genrec/sasrec.py, from its dataclass); Kang & McAuley's Beauty settings."""
  return ml_collections.ConfigDict({k: v for k, (v, _) in models.dataclass_fields(
      sasrec.SASRec, NOT_CONFIG).items()})


def tiger_model() -> ml_collections.ConfigDict:
  """TIGER retriever fields (genrec/tiger.py, from its dataclass); the paper's sizes (~13M)."""
  return ml_collections.ConfigDict({k: v for k, (v, _) in models.dataclass_fields(
      tiger.Tiger, NOT_CONFIG).items()})


def model_fields(system: str) -> dict:
  """{field: (default, comment)} of a system's model section (`python -m deres_jax.models`)."""
  cls = sasrec.SASRec if system == 'sasrec' else tiger.Tiger
  return models.dataclass_fields(cls, NOT_CONFIG)


def base_config(system: str = 'sasrec') -> ml_collections.ConfigDict:
  if system not in SYSTEMS:
    raise ValueError(f'system must be one of {SYSTEMS}, got {system!r}.')
  c = ml_collections.ConfigDict()
  c.family = 'genrec'             # the family (train/family.py): genrec/family.py
  c.compute_dtype = 'float32'     # kept for the shared loop; the retrievers run in float32
  c.system = system               # 'sasrec' | 'tiger' | 'cobra' (TIGER + dense vector + BeamFusion)
  c.seed = 0                      # parameters, batches, k-means, validation users
  # Data
  c.data = ml_collections.ConfigDict()
  c.data.path = '../shared/data/amazon'  # holds s3rec/<Dataset>.txt (+ _item2attributes.json); never downloaded
  c.data.dataset = 'beauty'       # 'beauty' | 'sports' | 'toys'
  c.data.max_len = 20             # history cap (TIGER: 20)
  c.data.windows = 'prefix'       # training windows: 'prefix' (one per transition, TIGER) | 'subsequence' (GRID)
  # Length bucketing (TIGER/COBRA training): windows are batched by history length in steps of this
  # many items and each batch's encoder input is cut to its longest history (left padding only; the
  # model's output does not change, tested); 0 = every batch padded to max_len items.
  c.data.bucket_items = 4
  # Encoder input layout: 'adjacent' = [pad.., user, items] (the user token right before the history,
  # as TIGER's right-padded T5 input; left padding can be cut) | 'first' = [user, pad.., items] (runs
  # trained before data.bucket_items existed; a config.json without user_token reads as 'adjacent'
  # when it has bucket_items, else 'first').
  c.data.user_token = 'adjacent'
  # Variable-length IDs (CAPSID, SemanticBPE) in the encoder input: True = each history item's real
  # tokens back to back, padding only on the left ([pad.., u, a1 a2, b1 b2 b3, ..]); False = every
  # item in a block of the longest ID's width, PAD-filled (the layout before this field; a
  # config.json without it reads as False). Fixed-length IDs (TIGER, COBRA) are the same either way.
  c.data.compact_ids = True
  # Item content features (tokenizer input)
  c.features = ml_collections.ConfigDict()
  c.features.source = 'attributes'  # 'attributes' (TF-IDF+SVD) | 'collaborative' (train-only PPMI+SVD) | 'npy' | 'a+b'
  c.features.dim = 64             # SVD dimensions
  c.features.window = 3           # collaborative: co-occurrence window in positions
  c.features.npy_path = ''        # npy: [N or N+1, d] array aligned to item ids
  # Tokenizer (semantic IDs)
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.name = 'rqvae'      # 'rqvae' (TIGER) | 'rqkmeans' (GRID) | 'capsid' (CAPSID, arXiv 2605.05096)
  c.tokenizer.levels = 3          # codebooks; IDs get one more (collision) token
  c.tokenizer.codebook_size = 256  # codes per level
  c.tokenizer.latent_dim = 32     # RQ-VAE codeword dimension
  c.tokenizer.hidden = (512, 256, 128)  # RQ-VAE encoder widths (decoder mirrors)
  c.tokenizer.beta = 0.25         # commitment weight
  c.tokenizer.optimizer = 'adagrad'  # TIGER: Adagrad; 'adam' also accepted
  c.tokenizer.learning_rate = 0.4  # TIGER: 0.4
  c.tokenizer.batch_size = 1024   # TIGER: 1024
  c.tokenizer.steps = 2000        # TIGER trains ~20k epochs; far fewer here
  c.tokenizer.restart_every = 100  # dead-code restart period in steps (0 = off)
  c.tokenizer.kmeans_iters = 25   # Lloyd iterations (init and RQ-KMeans)
  c.tokenizer.log_every = 200
  c.tokenizer.num_user_tokens = 2000  # hashed user tokens (TIGER: 2000)
  c.tokenizer.collision_order = 'popularity'  # extra-token order in a colliding group: 'popularity' | 'id' (open)
  # CAPSID (genrec/capsid.py, capsid_fit.py; the paper's values, research/capsid.md §9; 'open' = not published)
  c.tokenizer.max_levels = 6      # L_max, the longest routed ID (paper: 6)
  c.tokenizer.routing_iters = 3   # T, agreement updates from zero logits (paper: 3)
  c.tokenizer.tau = 0.82          # confidence max_k c_k ||o|| that ends the ID (paper: 0.82)
  c.tokenizer.eps = 0.08          # residual norm that ends the ID (paper: 0.08)
  c.tokenizer.squash_k = 0.5      # squash(z) = |z|^2 / (k + |z|^2) z / |z| (paper: 0.5)
  c.tokenizer.residual = 'soft'   # 'soft' (paper: r -= sum_k c_k squash(u_k)) | 'hard' (ablation: the winner only)
  c.tokenizer.fixed_length = 0    # 0: the stop rules (paper); n > 0: every ID has n tokens (ablation)
  c.tokenizer.adapter_rank = 8    # rank of the stage-2 low-rank routing adapter (paper: 8)
  c.tokenizer.recon_weight = 1.0  # lambda_r, reconstruction weight (open)
  c.tokenizer.spread_weight = 1.0  # lambda_s, spread loss weight (open; 0 = the no-spread ablation)
  c.tokenizer.length_weight = 0.01  # lambda_l, weight of E[L] (open)
  c.tokenizer.spread_anneal_steps = 200  # spread margin 0.2 -> 0.9 over this many stage-1 steps (paper: annealed)
  c.tokenizer.length_kappa = 0.05  # temperature of the smooth stop rule inside E[L] (ours)
  c.tokenizer.pose_init = 2.0     # w: poses start at (s_l/n)(w - |mu|^2/(2n^2)) I (ours; capsid_fit.init_params)
  # s_l per layer (last repeats): the routing precision at init (ours). < 4 leaves c ~ 1/K (no confidence
  # stop can fire); a large s at layers 1-2 ends most IDs at length 1-2 (collisions). Beauty: 13 % collision.
  # No s lets the residual rule fire with sharp routing; (4, 4, 16, 32) (beauty_capsid.py:cpu_deep32) turns
  # cap stops into confidence stops at layers 4-6 (results/capsid_tokenizer_beauty.md, issue 31 follow-up).
  c.tokenizer.vote_scale = (4.0, 4.0, 16.0)
  c.tokenizer.centre = True       # centre P(x) on the training items at init (a random ReLU MLP maps items into a cone)
  c.tokenizer.stage2_steps = 100  # stage 2: adapter only, centres/poses/projection frozen (open)
  c.tokenizer.collisions = 'extend'  # 'extend' (longer IDs first, then an extra token) | 'token' (open)
  # SemanticBPE over the item IDs (genrec/semantic_bpe.py; the paper's score, threshold and gate)
  c.bpe = ml_collections.ConfigDict()
  c.bpe.num_merges = 0            # subwords added to the vocabulary (0 = no BPE; open)
  c.bpe.alpha = 0.6               # score = alpha * normalised frequency + (1 - alpha) * cos(e_a, e_b) (paper: 0.6)
  c.bpe.theta_start = 0.90        # cosine threshold for a candidate pair at the first merge (paper: 0.90)
  c.bpe.theta_end = 0.55          # ... annealed linearly to this over the merge rounds (paper: 0.55)
  c.bpe.theta_rounds = 0          # R: rounds of the anneal (0 = num_merges); a round with no pair above theta
                                  # merges nothing and theta goes on down (semantic_bpe.threshold, Eq. S2)
  c.bpe.embedding = 'item_mean'   # e_t in cos(e_a, e_b) (the paper does not define it; semantic_bpe.py):
                                  # 'item_mean' (mean unit item vector, CAPSID r_0, of the items holding t)
                                  # | 'centre' (the code's vector: CAPSID's capsule centre squash(b))
  c.bpe.order = 'left'            # encoding: 'left' (left-to-right longest match: shared prefixes) | 'rank' (GPT-2)
  c.bpe.keep_prefix = 1           # leading tokens never merged (1: the trie's first level stays the base one,
                                  # docs/genrec.md; 0: merges may take the first token, R@10 0.0108 vs 0.0270)
  c.bpe.corpus = 'sequences'      # 'items' (each ID once) | 'sequences' (weighted by training-part counts; open)
  c.bpe.min_count = 2.0           # a pair must occur this often to be merged (open)
  c.bpe.gate_steps = 100          # steps training the merge gates' biases (Gumbel-sigmoid; 0 = all gates open)
  c.bpe.gate_temperature = 0.5    # Gumbel-softmax temperature of the gates in training (open)
  c.bpe.warmup_steps = 50         # frequency warm-up: the gate utility uses alpha = 1 at first (open)
  # COBRA-style sparse + dense retrieval (genrec/cobra.py; COBRA publishes no code: every field is our choice)
  c.cobra = ml_collections.ConfigDict()
  c.cobra.item_vectors = 'learned'  # item dense vectors: 'learned' (free table) | 'content' (tower over features)
  c.cobra.dense_dim = 64          # D, generated / item dense vector width
  c.cobra.dense_weight = 1.0      # weight of the in-batch softmax dense loss beside the token loss
  c.cobra.temperature = 0.1       # in-batch softmax temperature on cosines
  c.cobra.fusion_weight = 0.5     # BeamFusion w: (1-w) log softmax(beam log-prob) + w * cos_scale * cos
  c.cobra.cos_scale = 10.0        # psi, cosine scale in the fusion (1 / temperature: the trained logit scale)
  c.cobra.candidates = 'ann'      # 'ann' (every item scored with every beam's vector) | 'beam' (beams' own items)
  # Model
  c.model = sasrec_model() if system == 'sasrec' else tiger_model()
  # Optimizer: the shared section (deres_jax/config.py), same fields and meaning.
  c.optim = ctr_config.optim_section()
  c.optim.grad_clip = 1.0         # global-norm clipping
  # Training, evaluation, sharding, checkpointing: the loop's sections, shared by every family.
  ctr_config.add_loop_sections(c, monitor='recall@10', batch_size=128, eval_batch_size=512)
  c.train.num_steps, c.train.log_every = 4000, 200
  c.train.loss_fraction = 0.5     # SASRec: share of the B*L positions scored (valid ones first)
  c.eval.every_steps = 1000       # validation Recall/NDCG (on num_val_users users) every this many steps
  c.eval.num_val_users = 0        # validation on a random subset (0 = all users)
  c.eval.num_test_users = 0       # test on a random subset (0 = all users; same users for every system and seed)
  c.eval.beam_size = 10           # TIGER: beams = K of the returned list
  c.eval.kv_cache = True          # decode with cached keys/values (same beams and scores; False: recompute)
  c.eval.tail_fraction = 0.2      # least popular share of items reported as 'tail'
  c.eval.exclude_history = False  # drop the user's history items from the ranking (TIGER, GRID, SASRec: not done)
  c.ckpt.every_steps = 1000
  return c


CHOICES = dict(ctr_config.LOOP_CHOICES, **{'eval.monitor': MONITORS, 'data.windows': ('prefix', 'subsequence'),
                                            'data.user_token': ('adjacent', 'first'),
                                            'tokenizer.collision_order': ('popularity', 'id'),
                                            'model.position': ('relative', 'absolute'),
                                            'model.output': ('levels', 'positions', 'full')})


def validate(c, num_devices: int | None = None):
  """Stops with one sentence naming the field on an impossible config (ConfigError)."""
  if c.get('system') not in SYSTEMS:
    raise ctr_config.ConfigError(f'config.system must be one of {SYSTEMS}, got {c.get("system")!r}.')
  ctr_config.validate_sections(c, base_config(c.system), CHOICES, num_devices)
  known = model_fields(c.system)
  for key, value in c.model.items():
    if key not in known:
      close = difflib.get_close_matches(key, list(known), n=1)
      hint = f' Did you mean {close[0]!r}?' if close else ''
      raise ctr_config.ConfigError(f'config.model.{key} is not a field of the {c.system!r} model; its fields '
                                   f'are {list(known)}.{hint}')
  try:
    _validate(c)
  except ValueError as e:
    raise ctr_config.ConfigError(str(e)) from None
  return c


def _validate(c):
  if c.system not in SYSTEMS:
    raise ValueError(f'config.system must be one of {SYSTEMS}, got {c.system!r}.')
  if c.system == 'sasrec' and c.model.get('loss', 'full') not in ('full', 'sampled'):
    raise ValueError(f"config.model.loss must be 'full' or 'sampled', got {c.model.loss!r}.")
  if c.eval.beam_size < 10 and c.system != 'sasrec':
    raise ValueError(f'config.eval.beam_size must be >= 10 to report Recall@10, got {c.eval.beam_size}.')
  if not set(c.features.source.split('+')) <= {'attributes', 'collaborative', 'npy'}:
    raise ValueError("config.features.source must be attributes, collaborative, npy or several joined by '+', "
                     f'got {c.features.source!r}.')
  if 'npy' in c.features.source.split('+') and not c.features.npy_path:
    raise ValueError("config.features.npy_path must name a .npy file when features.source='npy'.")
  if c.tokenizer.name not in ('rqvae', 'rqkmeans', 'capsid'):
    raise ValueError(f"config.tokenizer.name must be 'rqvae', 'rqkmeans' or 'capsid', got {c.tokenizer.name!r}.")
  if not 0 <= c.tokenizer.fixed_length <= c.tokenizer.max_levels:
    raise ValueError(f'config.tokenizer.fixed_length must be in [0, max_levels={c.tokenizer.max_levels}], '
                     f'got {c.tokenizer.fixed_length}.')
  if c.tokenizer.residual not in ('soft', 'hard'):
    raise ValueError(f"config.tokenizer.residual must be 'soft' or 'hard', got {c.tokenizer.residual!r}.")
  if c.tokenizer.routing_iters < 1:
    raise ValueError(f'config.tokenizer.routing_iters must be >= 1, got {c.tokenizer.routing_iters}.')
  if c.tokenizer.collisions not in ('extend', 'token'):
    raise ValueError(f"config.tokenizer.collisions must be 'extend' or 'token', got {c.tokenizer.collisions!r}.")
  if c.bpe.corpus not in ('items', 'sequences'):
    raise ValueError(f"config.bpe.corpus must be 'items' or 'sequences', got {c.bpe.corpus!r}.")
  if c.bpe.order not in ('left', 'rank'):
    raise ValueError(f"config.bpe.order must be 'left' or 'rank', got {c.bpe.order!r}.")
  if not 0 <= c.bpe.alpha <= 1:
    raise ValueError(f'config.bpe.alpha must be in [0, 1], got {c.bpe.alpha}.')
  if c.bpe.num_merges < 0:
    raise ValueError(f'config.bpe.num_merges must be >= 0, got {c.bpe.num_merges}.')
  if c.cobra.item_vectors not in ('learned', 'content'):
    raise ValueError(f"config.cobra.item_vectors must be 'learned' or 'content', got {c.cobra.item_vectors!r}.")
  if c.cobra.candidates not in ('ann', 'beam'):
    raise ValueError(f"config.cobra.candidates must be 'ann' or 'beam', got {c.cobra.candidates!r}.")
  if not 0 <= c.cobra.fusion_weight <= 1:
    raise ValueError(f'config.cobra.fusion_weight must be in [0, 1], got {c.cobra.fusion_weight}.')
  if c.data.get('compact_ids', False) and c.data.get('user_token', 'adjacent') != 'adjacent':
    raise ValueError("config.data.compact_ids=True puts the user token right before the history tokens; it "
                     "needs config.data.user_token='adjacent' (or set data.compact_ids=False).")
  if c.data.get('bucket_items', 0) and c.data.get('user_token', 'adjacent') != 'adjacent':
    raise ValueError("config.data.bucket_items > 0 cuts left padding, which changes the model unless "
                     "config.data.user_token='adjacent'; set data.bucket_items=0 for the 'first' layout.")
  if not 0 <= c.data.get('bucket_items', 0) <= c.data.max_len:
    raise ValueError(f'config.data.bucket_items must be in [0, data.max_len={c.data.max_len}], '
                     f'got {c.data.bucket_items}.')
  if not 0 < c.train.loss_fraction <= 1:
    raise ValueError(f'config.train.loss_fraction must be in (0, 1], got {c.train.loss_fraction}.')
  return c
