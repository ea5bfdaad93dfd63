"""Avazu Click-Through Rate Prediction (Kaggle `train` CSV) as a `RowSpec`.

40,428,967 rows over 2014-10-21..30, comma separated with a header: id, click, hour
(YYMMDDHH), C1, banner_pos, site_*, app_*, device_*, C14..C21. BARS Avazu_x4 preprocessing
(research/ecosystem.md §1.1): `id` is dropped, `hour` becomes hour-of-day, weekday and
weekend categories, every other field is categorical, min_count 2, a random 8:1:1 split.
"""
from deres_jax.data.rows import RowSpec

COLUMNS = ('id', 'click', 'hour', 'C1', 'banner_pos', 'site_id', 'site_domain', 'site_category',
           'app_id', 'app_domain', 'app_category', 'device_id', 'device_ip', 'device_model',
           'device_type', 'device_conn_type', 'C14', 'C15', 'C16', 'C17', 'C18', 'C19', 'C20',
           'C21')
CATEGORICAL = COLUMNS[3:]
NUM_ROWS = 40_428_967
MIN_COUNT = 2
FILES = ('train', 'train.csv', 'train.gz', 'train.csv.gz')  # looked for in the manual directory

MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Download `train.gz` (40,428,967 rows) of the Avazu Click-Through Rate Prediction competition
from Kaggle (https://www.kaggle.com/c/avazu-ctr-prediction/data, `kaggle competitions
download -c avazu-ctr-prediction`) and put it in the manual directory, gzipped or not
(named train, train.csv, train.gz or train.csv.gz).
"""


def spec() -> RowSpec:
  return RowSpec(name='avazu', columns=COLUMNS, label='click', categorical=CATEGORICAL,
                 hour='hour', sep=',', header=True)
