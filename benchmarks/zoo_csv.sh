#!/usr/bin/env bash
# The model zoo against the DNN, DCNv2 and logistic regression on one prepared CSV table, under today's
# configs/byo_csv.py defaults (issue 26). The two tables: benchmarks/zoo_amazon_flat.sh (flat Amazon Beauty,
# results/zoo_amazon_flat.md) and benchmarks/zoo_synthetic_csv.sh (the held-out synthetic task's shape,
# results/zoo_synthetic_csv.md); each prepares its data and then runs this.
#   bash benchmarks/zoo_csv.sh CONFIG WORKDIR [SEEDS="0 1 2 3 4"]      (resumes: a finished row is read back)
# Every row: CONFIG plus the row's overrides; `model.name=<m>` switches with the config's zoo defaults
# (Auto-Split tokens, the DeRes connector). `deres_paper` is the library's DeRes without the DCNv2 cross
# stem (the paper's model). Prints the seed table against the DNN, then DeRes against DCNv2.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=$1
WORKDIR=$2
SEEDS=${3:-0 1 2 3 4}
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
python benchmarks/quality_ablations.py --config="$CONFIG" --workdir="$WORKDIR" "${exps[@]}" > /dev/null
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dnn --rows="$(IFS=,; echo "${ROWS[*]}")"
echo; echo "Against DCNv2 (paired over the seeds both have):"; echo
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dcnv2 --rows=dcnv2,deres,deres_paper,dnn
