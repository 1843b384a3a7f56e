#!/usr/bin/env bash
# Reproduces the README's pretraining result: BERT-mini on the State of the Union
# addresses (../shared/data), seq 128, from raw text to a run directory, in under 30
# minutes on 2 CPU cores. Then plots the curves.
set -euo pipefail
corpus="${1:-../shared/data/pretrain/en/sotu.txt.gz}"
kbl pretrain --corpus "$corpus" --out runs/sotu-mini --model mini --seq-len 128 \
    --steps 1400 --json runs/sotu-mini.json
python examples/plot_history.py runs/sotu-mini docs/sotu-mini.png \
    --title "BERT-mini on State of the Union addresses (2 CPU cores)"
