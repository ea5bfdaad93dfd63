"""AliExpress (Tianchi 74690): one scenario per country (NL, ES, FR, US, RU), CVR = conversion.

  python launch/train.py --config=configs/multiscenario/aliexpress.py --workdir=/tmp/ms_ae \
      --config.data.path=/path/to/aliexpress

DATA_DIR holds the dataset's own layout, AliExpress_<CC>/train.csv and test.csv (columns
search_id, categorical_1..16, numerical_1..63, click, conversion). The test file of each country
is split 1:1 into validation and test. The reader keeps rows in memory: a full RU file (11 GB
zipped) needs `--config.data.max_rows=N` (first N rows per file) or a bigger machine.
Reference (per-country CVR AUC, the dataset's challenge README): NL 0.7874 (AITM), ES 0.8268
(MMoE), FR 0.8144 (MMoE), US 0.8219 (AITM).
"""
from deres_jax.multiscenario import models
from deres_jax.multiscenario.config import base_config


def get_config():
  config = base_config()
  # Data: the country of each file is its scenario; target conversion (click is the other label).
  config.data.update(name='aliexpress', target='conversion', path='', countries='NL,ES,FR,US,RU',
                     max_rows=0)
  config.model = models.model_config('midpg', hidden=(256, 128, 64))
  config.train.update(batch_size=2048, num_steps=20_000, log_every=200)
  config.eval.update(every_steps=2000, batch_size=8192)
  config.ckpt.every_steps = 2000
  return config
