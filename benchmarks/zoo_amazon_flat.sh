#!/usr/bin/env bash
# The model zoo against the DNN, DCNv2 and logistic regression on Amazon Beauty as a flat CTR table, under
# today's configs/byo_csv.py defaults (issue 26; results/zoo_amazon_flat.md, docs/quality.md eighth round).
#   bash benchmarks/zoo_amazon_flat.sh [WORKDIR] [SEEDS="0 1 2 3 4"]   (about 1 CPU minute per run; resumes)
# Every row: configs/amazon_flat.py (= the configs/byo_csv.py defaults with this schema) plus the row's
# overrides; `model.name=<m>` switches with the config's zoo defaults (Auto-Split tokens, the DeRes
# connector). `deres_paper` is the library's DeRes without the DCNv2 cross stem (the paper's model).
# The table of the defaults before the eighth round (fixed embedding L2 1e-5): zoo_amazon_flat_l2_1e-5.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/amz/zoo_defaults}
SEEDS=${2:-0 1 2 3 4}
[ -f /tmp/amz/Beauty.csv ] || python benchmarks/make_amazon_flat_csv.py --out=/tmp/amz/Beauty.csv
[ -f /tmp/amz/prep/COMPLETE ] || python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
ROWS=(deres dnn dcnv2 logreg deres_paper tokenmixer_large rankmixer hiformer unimixer)
exps=()
for s in $SEEDS; do
  for m in "${ROWS[@]}"; do
    case $m in
      deres) o="" ;;
      deres_paper) o="model.embed_cross=0" ;;
      *) o="model.name=$m" ;;
    esac
    exps+=(--exp "${m}_s$s:$o seed=$s")
  done
done
python benchmarks/quality_ablations.py --config=configs/amazon_flat.py --workdir="$WORKDIR" "${exps[@]}" > /dev/null
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dnn --rows="$(IFS=,; echo "${ROWS[*]}")"
echo; echo "Against DCNv2 (paired over the seeds both have):"; echo
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dcnv2 --rows=dcnv2,deres,deres_paper,dnn
