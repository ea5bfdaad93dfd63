#!/usr/bin/env bash
# The model zoo against the DNN, DCNv2 and logistic regression on a table of the held-out synthetic task's
# shape (600k training rows, 8 dense + 20 categorical fields; configs/synthetic_csv.py), under today's
# configs/byo_csv.py defaults (issue 26; results/zoo_synthetic_csv.md, docs/quality.md ninth round).
#   bash benchmarks/zoo_synthetic_csv.sh [WORKDIR] [SEEDS="0"]   (10-25 CPU minutes per run; resumes)
# Rows and overrides: benchmarks/zoo_csv.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/syn/zoo}
SEEDS=${2:-0}
[ -f /tmp/syn/syn.csv ] || python benchmarks/make_synthetic_csv.py --rows=750000 --dense=8 --categorical=20 --out=/tmp/syn/syn.csv
[ -f /tmp/syn/prep/COMPLETE ] || python launch/prepare_data.py csv --config=configs/synthetic_csv.py --data_dir=/tmp/syn/prep
exec bash benchmarks/zoo_csv.sh configs/synthetic_csv.py "$WORKDIR" "$SEEDS"
