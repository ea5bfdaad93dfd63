"""CAPSID (capsule-routed variable-length semantic IDs, arXiv 2605.05096) + the TIGER retriever on Beauty.

  python launch/train.py --config=configs/genrec/beauty_capsid.py:cpu --workdir=/tmp/g_capsid

Presets: 'cpu' (the retriever of beauty_tiger_rqvae.py:cpu), 'cpu_long' (its cpu_long retriever,
about 1-2 hours on 2 cores), 'full', 'tiny' (tests).

Same item features, retriever and presets as beauty_tiger_rqvae.py; the tokenizer is CAPSID with
the paper's values (genrec/capsid.py: K = 256 capsules per layer with their own pose and bias,
T = 3, tau = 0.82, eps = 0.08, L_max = 6, soft residual, rank-8 stage-2 adapter). What the paper
leaves open (loss weights, projection sizes, initialisation) is a config.tokenizer field.
The argument is '<preset>[_<ablation>]': the paper's ablations (research/capsid.md §9.4)
  hard   hard-winner residual          iter1  T = 1
  fixed2 fixed length 2                fixed4 fixed length 4
  nospread  no spread loss
and two of ours (fields the paper leaves open, not paper ablations; results/capsid_tokenizer_beauty.md,
issue 31 follow-up, bench_capsid_tokenizer.py, 30 + 5 steps, against cpu; Recall@10 not measured):
  deep32     vote_scale (4, 4, 16, 32): init routing precision 32 from layer 4 on, so more IDs end by
             confidence at layers 4-6 (cap share 36.5 -> 10.1 %, routed length 4.48 -> 3.99, collision 18.3 -> 17.9 %)
  deep32len  deep32 and length_weight 1.0 (E[L] holds the init against the reconstruction term's drift
             to longer IDs): cap 8.3 %, routed length 3.88, collision 14.5 %, utilisation 80 -> 79 %
and its sensitivity sweeps: T<n> (T = 1, 2, 3, 5), lmax<n> (L_max = 4, 8), tau<x> (0.75, 0.90),
e.g. 'cpu_T5', 'cpu_lmax8', 'cpu_tau0.75'. SemanticBPE variants: beauty_capsid_bpe.py.
"""
import os

from deres_jax.config import load_file

ABLATIONS = {
    '': {},
    'hard': {'residual': 'hard'},
    'iter1': {'routing_iters': 1},
    'fixed2': {'fixed_length': 2, 'max_levels': 2},   # only the layers a fixed length uses
    'fixed4': {'fixed_length': 4, 'max_levels': 4},
    'nospread': {'spread_weight': 0.0},
    'deep32': {'vote_scale': (4.0, 4.0, 16.0, 32.0)},   # ours: sharper init routing from layer 4 on
    'deep32len': {'vote_scale': (4.0, 4.0, 16.0, 32.0), 'length_weight': 1.0},
}


def _rqvae_config(arg):
  return load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beauty_tiger_rqvae.py'), arg)


def ablation(name: str) -> dict:
  """Tokenizer overrides of an ablation or sensitivity point ('hard', 'T5', 'lmax8', 'tau0.75', ...)."""
  if name in ABLATIONS:
    return ABLATIONS[name]
  for prefix, field, cast in (('T', 'routing_iters', int), ('lmax', 'max_levels', int), ('tau', 'tau', float)):
    if name.startswith(prefix) and name[len(prefix):].replace('.', '', 1).isdigit():
      return {field: cast(name[len(prefix):])}
  raise ValueError(f'ablation must be one of {sorted(ABLATIONS)} or T<n>, lmax<n>, tau<x> (e.g. cpu_hard, '
                   f'cpu_T5, cpu_tau0.75), got {name!r}.')


def split_arg(arg: str) -> tuple:
  """('cpu_long', 'hard') from 'cpu_long_hard', ('cpu', 'T5') from 'cpu_T5': the preset, then the variant."""
  for preset in ('cpu_long', 'cpu', 'full', 'tiny'):
    if arg == preset or arg.startswith(preset + '_'):
      return preset, arg[len(preset) + 1:]
  raise ValueError(f"preset must be 'cpu', 'cpu_long', 'full' or 'tiny' (then _<ablation>), got {arg!r}.")


def get_config(arg='cpu'):
  preset, name = split_arg(arg)
  overrides = ablation(name)
  config = _rqvae_config(preset)
  # Tokenizer: CAPSID with the paper's values; Adam; loss weights, init and learning rate are ours.
  # Adam 1e-4, not the RQ-VAE's 1e-3 (results/capsid_tokenizer_beauty.md): at 1e-3 the reconstruction
  # term re-fits the projection within 30 steps, r_0 moves off the capsules it was initialised on and
  # collision rises 13.7 % -> 63 % (61 % with no spread loss, so not the spread term); at 1e-4: 13 %.
  # vote_scale / pose_init / centre (deres_jax/genrec/config.py): the initial routing precision per layer.
  config.tokenizer.update(name='capsid', max_levels=6, routing_iters=3, tau=0.82, eps=0.08,
                          squash_k=0.5, residual='soft', fixed_length=0, adapter_rank=8, recon_weight=1.0,
                          spread_weight=1.0, length_weight=0.01, collisions='extend', optimizer='adam',
                          learning_rate=1e-4, pose_init=2.0, vote_scale=(4.0, 4.0, 16.0), centre=True)
  # Variable-length IDs: at each decoder position a softmax over the tokens the catalogue's IDs have
  # there (eos where an ID ends): TIGER's per-level output generalised. 'full' (one softmax over the
  # whole vocabulary) costs TIGER 0.0243 -> 0.0175 R@10 at the table's cpu_short budget (docs/genrec.md).
  config.model.output = 'positions'
  if preset in ('cpu', 'cpu_long'):
    # 'cpu_long': the same tokenizer budget, and TIGER's cpu_long retriever (20,000 steps of 128
    # sub-sequence windows, warm-up then inverse square root): the genrec table's cpu_long_capsid preset.
    # Routing costs 6 layers x 3 iterations over 256 capsules with 32x32 poses: 300 + 50 steps fit 2 cores.
    config.tokenizer.update(steps=300, stage2_steps=50, spread_anneal_steps=200, log_every=100)
  if preset == 'tiny':
    config.tokenizer.update(max_levels=3, steps=10, stage2_steps=2, spread_anneal_steps=5, adapter_rank=2)
  config.tokenizer.update(overrides)
  return config
