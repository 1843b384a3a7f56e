#!/usr/bin/env bash
# Exports the sentiment classifiers of the fine-tuning table (examples/finetune_table.py)
# in every format and verifies each against its Keras model on the whole dev set: the
# README's export table.
#   examples/export_sentiment.sh              # runs/table/sentiment-{en,zh}-pretrained
#   examples/export_sentiment.sh RUN_DIR ...  # other fine-tuned runs (runs/exports/NAME)
set -euo pipefail
if [ $# -eq 0 ]; then
  set -- runs/table/sentiment-en-pretrained runs/table/sentiment-zh-pretrained
fi
mkdir -p runs/exports
for run in "$@"; do
  name="$(basename "$run")"
  out="runs/exports/$name"
  kbl export --model "$run" --format all --out "$out"
  kbl verify --export "$out" --json "runs/exports/$name.verify.json"
done
