"""The genrec config: every field with its default and meaning; `validate()`.

configs/genrec/<data>_<system>.py start from `base_config(system)` and override presets.
"""
import ml_collections

SYSTEMS = ('sasrec', 'tiger', 'cobra')


def sasrec_model() -> ml_collections.ConfigDict:
  """SASRec fields (genrec/sasrec.py); Kang & McAuley's Beauty settings."""
  return ml_collections.ConfigDict(dict(
      width=64,        # d, embedding and hidden width
      depth=2,         # self-attention blocks
      num_heads=1,     # attention heads
      mlp_mult=1,      # FFN hidden = mlp_mult * width
      dropout=0.2,     # embedding / attention / FFN dropout
      loss='full',     # 'full' softmax over the catalogue | 'sampled' (uniform negatives shared by the batch)
      num_negatives=256,  # negatives per step when loss='sampled'
  ))


def tiger_model() -> ml_collections.ConfigDict:
  """TIGER retriever fields (genrec/tiger.py); defaults are the paper's sizes (~13M parameters)."""
  return ml_collections.ConfigDict(dict(
      width=128,       # model width
      num_heads=6,     # attention heads
      head_dim=64,     # per-head width (6 x 64 = 384 qkv features)
      mlp_dim=1024,    # MLP hidden width
      enc_depth=4,     # encoder layers
      dec_depth=4,     # decoder layers
      dropout=0.1,     # dropout everywhere
  ))


def base_config(system: str = 'sasrec') -> ml_collections.ConfigDict:
  if system not in SYSTEMS:
    raise ValueError(f'system must be one of {SYSTEMS}, got {system!r}.')
  c = ml_collections.ConfigDict()
  c.system = system               # 'sasrec' | 'tiger' | 'cobra' (TIGER + dense vector + BeamFusion)
  c.seed = 0                      # parameters, batches, k-means, validation users
  # Data
  c.data = ml_collections.ConfigDict()
  c.data.data_dir = '../shared/data/amazon'  # holds s3rec/<Dataset>.txt (+ _item2attributes.json); never downloaded
  c.data.dataset = 'beauty'       # 'beauty' | 'sports' | 'toys'
  c.data.max_len = 20             # history cap (TIGER: 20)
  # Item content features (tokenizer input)
  c.features = ml_collections.ConfigDict()
  c.features.source = 'attributes'  # 'attributes' (TF-IDF+SVD) | 'collaborative' (train-only PPMI+SVD) | 'npy' | 'a+b'
  c.features.dim = 64             # SVD dimensions
  c.features.window = 3           # collaborative: co-occurrence window in positions
  c.features.npy_path = ''        # npy: [N or N+1, d] array aligned to item ids
  # Tokenizer (semantic IDs)
  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.name = 'rqvae'      # 'rqvae' (TIGER) | 'rqkmeans' (GRID) | 'capsid' (CAPSID, reconstructed)
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
  # CAPSID (genrec/capsid.py; arXiv 2605.05096 gives no equations: every field below is our choice)
  c.tokenizer.max_levels = 4      # L_max, the longest routed ID (open in the paper)
  c.tokenizer.min_levels = 2      # L_min, no ID ends before this many tokens (open)
  c.tokenizer.routing_iters = 3   # T, routing-by-agreement iterations (Sabour et al.: 3; open)
  c.tokenizer.tau = 0.1           # routing temperature on distances relative to ||r||^2 (open)
  c.tokenizer.top_m = 4           # capsules a residual routes to (top-m sparsity; 0 = all; open)
  c.tokenizer.threshold = 0.9     # confidence of the active capsule that ends the ID (open)
  c.tokenizer.hard = False        # ablation: hard nearest-capsule routing (= residual k-means)
  c.tokenizer.fixed_length = False  # ablation: every ID has max_levels tokens
  c.tokenizer.votes = 'capsule'   # 'capsule' (u_k = e_k) | 'pose' (u_k = e_k + W r, MIND-style; open)
  c.tokenizer.usage_weight = 0.1  # capsule-usage (diversity) regulariser weight (open)
  c.tokenizer.sharp_weight = 0.01  # routing-entropy (sharpness) regulariser weight (open)
  c.tokenizer.collisions = 'extend'  # 'extend' (longer IDs first, then an extra token) | 'token' (open)
  # SemanticBPE over the item IDs (genrec/semantic_bpe.py; merge score and sizes are our choice)
  c.bpe = ml_collections.ConfigDict()
  c.bpe.num_merges = 0            # subwords added to the vocabulary (0 = no BPE)
  c.bpe.lam = 1.0                 # lambda, weight of the embedding compatibility cos(e_a, e_b) (0 = frequency BPE)
  c.bpe.corpus = 'sequences'      # 'items' (each ID once) | 'sequences' (weighted by training-part counts)
  c.bpe.min_count = 2.0           # a pair must occur this often to be merged
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
  # Optimizer (deres_jax/train/optim.py reads these fields)
  c.optim = ml_collections.ConfigDict()
  c.optim.name = 'adam'           # dense parameters
  c.optim.learning_rate = 1e-3
  c.optim.embed_name = 'adam'     # embedding tables
  c.optim.embed_learning_rate = 1e-3
  c.optim.weight_decay = 0.0      # adamw only
  c.optim.schedule = 'constant'   # 'constant' | 'cosine'
  c.optim.warmup_steps = 0
  c.optim.grad_clip = 1.0         # global-norm clipping, 0 = off
  # Training
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_steps = 4000
  c.train.log_every = 200
  c.train.loss_fraction = 0.5     # SASRec: share of the B*L positions scored (valid ones first)
  # Eval
  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 1000
  c.eval.batch_size = 512         # users per scoring / decoding call
  c.eval.num_val_users = 0        # validation on a random subset (0 = all users)
  c.eval.num_test_users = 0       # test on a random subset (0 = all users; same users for every system and seed)
  c.eval.beam_size = 10           # TIGER: beams = K of the returned list
  c.eval.tail_fraction = 0.2      # least popular share of items reported as 'tail'
  # Checkpointing
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 1000
  c.ckpt.max_to_keep = 2
  return c


def validate(c):
  """Stops with one sentence naming the field on an impossible config."""
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
  if not 1 <= c.tokenizer.min_levels <= c.tokenizer.max_levels:
    raise ValueError(f'config.tokenizer.min_levels must be in [1, max_levels={c.tokenizer.max_levels}], '
                     f'got {c.tokenizer.min_levels}.')
  if c.tokenizer.votes not in ('capsule', 'pose'):
    raise ValueError(f"config.tokenizer.votes must be 'capsule' or 'pose', got {c.tokenizer.votes!r}.")
  if c.tokenizer.collisions not in ('extend', 'token'):
    raise ValueError(f"config.tokenizer.collisions must be 'extend' or 'token', got {c.tokenizer.collisions!r}.")
  if c.bpe.corpus not in ('items', 'sequences'):
    raise ValueError(f"config.bpe.corpus must be 'items' or 'sequences', got {c.bpe.corpus!r}.")
  if c.bpe.num_merges < 0:
    raise ValueError(f'config.bpe.num_merges must be >= 0, got {c.bpe.num_merges}.')
  if c.cobra.item_vectors not in ('learned', 'content'):
    raise ValueError(f"config.cobra.item_vectors must be 'learned' or 'content', got {c.cobra.item_vectors!r}.")
  if c.cobra.candidates not in ('ann', 'beam'):
    raise ValueError(f"config.cobra.candidates must be 'ann' or 'beam', got {c.cobra.candidates!r}.")
  if not 0 <= c.cobra.fusion_weight <= 1:
    raise ValueError(f'config.cobra.fusion_weight must be in [0, 1], got {c.cobra.fusion_weight}.')
  if not 0 < c.train.loss_fraction <= 1:
    raise ValueError(f'config.train.loss_fraction must be in (0, 1], got {c.train.loss_fraction}.')
  return c
