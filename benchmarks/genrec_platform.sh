#!/usr/bin/env bash
# Issue 28's platform runs on one Amazon dataset: SASRec and TIGER (RQ-VAE IDs) at the same number
# of training targets (both `cpu_long` presets), the popularity baseline, the learning curve.
#   bash benchmarks/genrec_platform.sh [DATASET=beauty] [WORKDIR=/work/runs]   (resumes; ~1.5 h on 2 cores)
# Prints the learning-curve table, the test table and the popularity row, and writes
# results/genrec_learning_curve_<dataset>.svg. Data: ../shared/data/amazon (config data.path).
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-beauty}
WORKDIR=${2:-/work/runs}
SUFFIX=$([ "$DATASET" = beauty ] && echo "" || echo "_$DATASET")
TIGER="$WORKDIR/tiger_cpu_long_v2$SUFFIX"
SASREC="$WORKDIR/sasrec_cpu_long$SUFFIX"
python launch/train.py --config=configs/genrec/beauty_sasrec.py:cpu_long --workdir="$SASREC" \
  --config.data.dataset="$DATASET"
python launch/train.py --config=configs/genrec/beauty_tiger_rqvae.py:cpu_long --workdir="$TIGER" \
  --config.data.dataset="$DATASET"
python benchmarks/genrec_popularity.py --dataset="$DATASET"
python benchmarks/genrec_learning_curve.py --run "SASRec=$SASREC" --run "TIGER (RQ-VAE IDs)=$TIGER" \
  --out_svg="results/genrec_learning_curve_$DATASET.svg"
