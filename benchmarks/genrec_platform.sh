#!/usr/bin/env bash
# Issue 28's platform table on one Amazon dataset: SASRec and TIGER over RQ-VAE and RQ-KMeans IDs
# at the configs' `cpu_long` budget (the genrec table's `cpu_long` preset), the popularity
# baseline, the papers' figures, then the learning curve of the runs whose workdirs are here.
#   bash benchmarks/genrec_platform.sh [DATASET=sports] [WORKDIR=/work/runs] [OUT=results/genrec_platform_<dataset>.md]
# Two processes share the cores (the TIGER rows, SASRec) and one run ledger beside OUT
# (results/genrec_platform_<dataset>.runs.jsonl), so a finished run survives a lost workdir;
# rerunning resumes (a run in progress resumes from its own checkpoints). About 1-1.5 h per run.
# Data: ../shared/data/amazon (--data_path of launch/reproduce.py).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-sports}
WORKDIR=${2:-/work/runs}/platform_$DATASET
OUT=${3:-results/genrec_platform_$DATASET.md}
TABLE=(python launch/reproduce.py --table=genrec --data="$DATASET" --preset=cpu_long --seeds=1
       --workdir="$WORKDIR" --out="$OUT")
"${TABLE[@]}" --rows=tiger_rqvae,tiger_rqkmeans --latency_rounds=0 &
TIGER_PID=$!
"${TABLE[@]}" --rows=sasrec --latency_rounds=0
wait "$TIGER_PID"
# Every run is in the ledger now: rewrite the table from all of them and time decoding back to back.
"${TABLE[@]}" --latency_rounds=3
CURVES=()
for row in "SASRec=sasrec" "TIGER (RQ-VAE IDs)=tiger_rqvae" "TIGER (RQ-KMeans IDs)=tiger_rqkmeans"; do
  dir="$WORKDIR/${row#*=}/seed0"
  if [ -f "$dir/config.json" ]; then CURVES+=(--run "${row%%=*}=$dir"); fi
done
if [ ${#CURVES[@]} -gt 0 ]; then
  python benchmarks/genrec_learning_curve.py "${CURVES[@]}" --out_svg="results/genrec_learning_curve_$DATASET.svg"
fi
