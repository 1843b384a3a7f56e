#!/usr/bin/env bash
# Exports the sentiment classifiers of the fine-tuning table (examples/finetune_table.py)
# in every format and verifies each against its Keras model on the whole dev set: the
# README's export table.
#   examples/export_sentiment.sh            # runs/table/sentiment-{en,zh}-pretrained
set -euo pipefail
for lang in en zh; do
  run="runs/table/sentiment-$lang-pretrained"
  out="runs/exports/sentiment-$lang"
  kbl export --model "$run" --format all --out "$out"
  kbl verify --export "$out" --json "runs/exports/sentiment-$lang.verify.json"
done
