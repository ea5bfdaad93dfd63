#!/usr/bin/env bash
# The model zoo against the DNN on Amazon Beauty as a flat CTR table, 10 seeds, 20 for DeRes, DNN, DCNv2 (issue 26;
# results/zoo_amazon_flat_l2_1e-5.md, docs/quality.md fifth to seventh rounds), under the configs/byo_csv.py
# defaults as they were until the eighth round: a fixed embedding L2 of 1e-5 (every row pins it, so the
# table reproduces; today's defaults: benchmarks/zoo_amazon_flat.sh).
#   bash benchmarks/zoo_amazon_flat_l2_1e-5.sh [WORKDIR]     (about 40 CPU minutes on 2 cores; resumes)
# Every row: configs/amazon_flat.py (= the configs/byo_csv.py defaults with this schema) plus
# the row's overrides; `model.name=<m>` switches with the config's zoo defaults. The `_deres`
# rows replace each model's published residual (PostNorm, SiameseNorm, PreNorm) by DeRes; the
# other rows name the published one (the config's zoo_connector would otherwise give DeRes).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR=${1:-/tmp/amz/zoo}
[ -f /tmp/amz/Beauty.csv ] || python benchmarks/make_amazon_flat_csv.py --out=/tmp/amz/Beauty.csv
[ -f /tmp/amz/prep/COMPLETE ] || python launch/prepare_data.py csv --config=configs/amazon_flat.py --data_dir=/tmp/amz/prep
declare -A PUB=([rankmixer]=postnorm [tokenmixer_large]=prenorm [hiformer]=prenorm [unimixer]=siamese)
exps=()
for s in 0 1 2 3 4 5 6 7 8 9; do
  exps+=(--exp "deres_s$s:seed=$s")
  for m in dnn dcnv2 rankmixer tokenmixer_large hiformer unimixer; do
    exps+=(--exp "${m}_s$s:model.name=$m ${PUB[$m]:+model.connector=${PUB[$m]}} seed=$s")
  done
  for m in rankmixer tokenmixer_large hiformer unimixer; do
    exps+=(--exp "${m}_deres_s$s:model.name=$m model.connector=deres seed=$s")
  done
  exps+=(--exp "rankmixer_deres_mult2_s$s:model.name=rankmixer model.connector=deres model.ffn_mult=2 seed=$s"
         --exp "rankmixer_deres_d4_s$s:model.name=rankmixer model.connector=deres model.depth=4 seed=$s"
         --exp "rankmixer_deres_d1_s$s:model.name=rankmixer model.connector=deres model.depth=1 seed=$s"
         --exp "rankmixer_deres_ls0_s$s:model.name=rankmixer model.connector=deres model.mix_scale=zero seed=$s")
  exps+=(--exp "hiformer_lowrank16_s$s:model.name=hiformer model.low_rank=16 model.connector=prenorm seed=$s"
         --exp "hiformer_lowrank16_deres_s$s:model.name=hiformer model.low_rank=16 model.connector=deres seed=$s")
done
for s in 10 11 12 13 14 15 16 17 18 19; do   # the library's default (DeRes) and its two baselines: 20 seeds
  exps+=(--exp "deres_s$s:seed=$s" --exp "dnn_s$s:model.name=dnn seed=$s" --exp "dcnv2_s$s:model.name=dcnv2 seed=$s")
done
for s in 0 1 2 3 4; do   # one change each, 5 seeds
  exps+=(--exp "unimixer_pre_s$s:model.name=unimixer model.connector=prenorm seed=$s"
         --exp "unimixer_ann600_s$s:model.name=unimixer model.connector=siamese model.anneal_steps=600 seed=$s"
         --exp "unimixer_t02_s$s:model.name=unimixer model.connector=siamese model.temp_start=0.2 seed=$s"
         --exp "hiformer_shared_s$s:model.name=hiformer model.connector=prenorm model.ffn=shared seed=$s"
         --exp "hiformer_drop_s$s:model.name=hiformer model.connector=prenorm model.dropout=0.1 seed=$s"
         --exp "hiformer_lr3_s$s:model.name=hiformer model.connector=prenorm optim.learning_rate=3e-3 seed=$s"
         --exp "hiformer_h1_s$s:model.name=hiformer model.connector=prenorm model.num_heads=1 seed=$s"
         --exp "rankmixer_drop_s$s:model.name=rankmixer model.connector=postnorm model.dropout=0.1 seed=$s")
done
for i in "${!exps[@]}"; do   # the embedding L2 of the defaults before the eighth round
  [ "${exps[$i]}" = --exp ] || exps[$i]="${exps[$i]} optim.embed_l2=1e-5 optim.embed_l2_prior=0"
done
python benchmarks/quality_ablations.py --config=configs/amazon_flat.py --workdir="$WORKDIR" "${exps[@]}" > /dev/null
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dnn \
  --rows=dnn,dcnv2,deres,tokenmixer_large,tokenmixer_large_deres,rankmixer,rankmixer_deres,hiformer,hiformer_deres,hiformer_lowrank16,hiformer_lowrank16_deres,unimixer,unimixer_deres,unimixer_pre,unimixer_ann600,unimixer_t02,hiformer_shared,hiformer_drop,hiformer_lr3,hiformer_h1,rankmixer_drop,rankmixer_deres_mult2,rankmixer_deres_d4,rankmixer_deres_d1,rankmixer_deres_ls0
echo; echo "The library's default against DCNv2 (paired over the seeds both have):"; echo
PYTHONPATH=. python benchmarks/seed_table.py --workdir="$WORKDIR" --baseline=dcnv2 --rows=dcnv2,deres,dnn
