#!/usr/bin/env bash
# The issue-26 diagnosis table on Amazon Beauty as a flat CTR table (results/quality_amazon_flat.md).
#   bash benchmarks/quality_amazon_flat.sh [WORKDIR]      (about 1 CPU hour on 2 cores; resumes)
# Builds the CSV and its prepared copy if missing, trains every row with the library's defaults
# (configs/amazon_flat.py = configs/byo_csv.py with this schema) plus the row's overrides, and
# prints the seed-aggregated table. PREV = the byo_csv model defaults before this table.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/amz/qa5}
[ -f /tmp/amz/Beauty.csv ] || python benchmarks/make_amazon_flat_csv.py --out=/tmp/amz/Beauty.csv
[ -f /tmp/amz/prep/COMPLETE ] || python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
PREV="model.tokenizer=group model.out_norm=rms"
exps=()
for s in 0 1 2 3 4; do
  exps+=(--exp "deres_s$s:seed=$s" --exp "deres_prev_s$s:$PREV seed=$s"
         --exp "deres_paper_s$s:model.embed_cross=0 seed=$s" --exp "prenorm_s$s:model.connector=prenorm seed=$s"
         --exp "dnn_s$s:model.name=dnn seed=$s" --exp "dcnv2_s$s:model.name=dcnv2 seed=$s")
done
for s in 0 1 2; do
  exps+=(--exp "onetrans_s$s:model.name=onetrans model.connector=prenorm seed=$s" --exp "onetrans_prev_s$s:model.name=onetrans model.connector=prenorm model.out_norm=rms seed=$s"
         --exp "tokens_only_s$s:model.out_norm=rms seed=$s" --exp "out_norm_only_s$s:model.tokenizer=group seed=$s"
         --exp "width64_s$s:model.width=64 seed=$s" --exp "tokens16_s$s:model.num_tokens=16 seed=$s"
         --exp "deres_paper_prev_s$s:$PREV model.embed_cross=0 seed=$s" --exp "prenorm_prev_s$s:$PREV model.connector=prenorm seed=$s"
         --exp "additive_prev_s$s:$PREV model.merge=additive seed=$s" --exp "add_prev_s$s:$PREV model.merge=add seed=$s"
         --exp "head400x3_prev_s$s:$PREV model.head_hidden=(400,400,400) seed=$s"
         --exp "oldinit_prev_s$s:$PREV model.branch_init=default seed=$s" --exp "logreg_s$s:model.name=logreg seed=$s")
done
exps+=(--exp "first_order_prev_s0:$PREV model.first_order=True seed=0" --exp "dropout_prev_s0:$PREV model.dropout=0.1 seed=0"
       --exp "lr3e-3_prev_s0:$PREV optim.learning_rate=3e-3 seed=0")
python benchmarks/quality_ablations.py --config=configs/amazon_flat.py --workdir="$WORKDIR" "${exps[@]}"
python benchmarks/seed_table.py --workdir="$WORKDIR" --rows=deres,deres_prev,deres_paper,deres_paper_prev,prenorm,onetrans,prenorm_prev,onetrans_prev,tokens_only,out_norm_only,width64,tokens16,additive_prev,add_prev,head400x3_prev,oldinit_prev,first_order_prev,dropout_prev,lr3e-3_prev,dnn,dcnv2,logreg
