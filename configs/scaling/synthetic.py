"""Scaling study on synthetic Criteo-schema data: a small CPU sweep (docs/scaling.md).

  nice -n 10 python launch/scaling.py --config=configs/scaling/synthetic.py \
      --workdir=/tmp/scaling_synthetic --models=deres,onetrans,prenorm \
      --out=results/scaling_synthetic.md

Depths 1, 2, 4 at width 16, 2 seeds, 400 steps of 512 rows (about one epoch of 200k rows) for
every point: 18 runs plus 2 of the reference, about 10–15 minutes on 2 CPU cores. Compute
varies by 3× only (the tokenizer and head are a fixed cost), so this checks the machinery
and reads the slope of a short range; a GPU sweep would widen `depths` (2, 4, 8, 16).

`:converged` (issue 26: "deeper is worse" must not just mean undertrained) trains every point
to its validation optimum instead: up to 12 epochs, validation every half epoch, the learning
rates x0.1 after a validation without gain, early stop after 3 without gain, the
best-validation parameters tested; depths 1, 2, 4, 8 and 3 seeds (CPU hours; it resumes):

  nice -n 10 python launch/scaling.py --config=configs/scaling/synthetic.py:converged \
      --workdir=/tmp/scaling_converged --models=deres,onetrans,prenorm \
      --out=results/scaling_synthetic_converged.md
"""
import ml_collections

from deres_jax.config import base_config


def get_config(arg: str = 'short'):
  if arg not in ('short', 'converged'):
    raise ValueError(f"configs/scaling/synthetic.py:{arg}: choose 'short' or 'converged'.")
  config = base_config()
  # Data: 200k/20k/20k synthetic rows; 20k test rows keep the AUC's sampling sd near 0.004.
  # Small vocabularies and strong interactions: at this budget the quickstart data (max_vocab
  # 10k, std_first 1) is learnt no better by tiny Transformers than by logistic regression,
  # so every ΔAUC over the reference would be <= 0 and no power law could be fitted.
  config.data.name = 'synthetic'
  config.data.num_train, config.data.num_val, config.data.num_test = 200_000, 20_000, 20_000
  config.data.max_vocab = 100
  config.data.update(std_first=0.5, std_pair=1.2, std_three=1.0, std_four=0.8)
  # Model: the fields every swept model shares; depth, width and the connector come per point.
  config.model.update(depth=2, width=16, num_heads=2, embed_dim=8, ffn_mult=2, head_hidden=(64,),
                      tokenizer='group', num_tokens=8, block_size=2)
  # Training: the fixed data budget, the same for every point.
  config.train.update(batch_size=512, num_steps=400, log_every=100, progress=False)
  config.optim.learning_rate = 3e-3
  config.optim.embed_learning_rate = 3e-3
  config.eval.update(every_steps=200, batch_size=4096)
  config.ckpt.every_steps = 200

  # Scaling: what is swept and how it is fitted (deres_jax/scaling/fit.py).
  config.scaling = ml_collections.ConfigDict()
  s = config.scaling
  s.models = 'deres,onetrans,prenorm'  # default of --models
  s.depths = (1, 2, 4)              # blocks per point
  s.widths = (16,)                  # token widths per point (must divide by model.num_heads)
  s.seeds = (0, 1)                  # training seeds (config.seed) per point; data.seed is fixed
  s.scan_from_depth = 16            # depths >= this use model.scan_layers=True (0 = never)
  s.reference = 'logreg'            # ΔAUC is measured against this run ('onetrans depth=1 width=16' also works)
  s.delta = 'relative'              # ΔAUC = 100·(AUC − AUC_ref)/AUC_ref ('absolute': 100·(AUC − AUC_ref))
  s.metric = 'test_auc'             # the record field fitted
  s.compute = 'train_flops'         # x: 'train_flops', 'inference_flops' (per example), 'params', 'dense_params'
  s.compute_unit = 1e6              # C is divided by this (a depends on it, γ does not)
  s.compute_unit_name = 'MFLOPs/example'
  s.num_bootstrap = 2000            # bootstrap replicates (seeds resampled within each point)
  s.bootstrap_seed = 0
  s.pairs = 'deres:onetrans,deres:prenorm'  # compute matching: A:B = compute A needs to reach B's AUC
  if arg == 'converged':  # every point at its validation optimum (the main table's converged recipe)
    config.train.update(num_epochs=12.0, batch_size=256)
    config.optim.update(learning_rate=1e-3, embed_learning_rate=1e-2, plateau_factor=0.1)
    config.eval.update(every_epochs=0.5, patience=3, restore_best=True)
    config.ckpt.every_steps = 1000
    s.depths = (1, 2, 4, 8)
    s.seeds = (0, 1, 2)
  return config
