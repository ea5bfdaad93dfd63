#!/usr/bin/env bash
# The model zoo against the DNN, DCNv2 and logistic regression on Amazon Beauty as a flat CTR table, under
# today's configs/byo_csv.py defaults (issue 26; results/zoo_amazon_flat.md, docs/quality.md eighth round).
#   bash benchmarks/zoo_amazon_flat.sh [WORKDIR] [SEEDS="0 1 2 3 4"]   (about 1 CPU minute per run; resumes)
# Rows and overrides: benchmarks/zoo_csv.sh. The table of the defaults before the eighth round (fixed
# embedding L2 1e-5): zoo_amazon_flat_l2_1e-5.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/amz/zoo_defaults}
SEEDS=${2:-0 1 2 3 4}
[ -f /tmp/amz/Beauty.csv ] || python benchmarks/make_amazon_flat_csv.py --out=/tmp/amz/Beauty.csv
[ -f /tmp/amz/prep/COMPLETE ] || python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
exec bash benchmarks/zoo_csv.sh configs/amazon_flat.py "$WORKDIR" "$SEEDS"
