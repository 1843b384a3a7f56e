#!/usr/bin/env bash
# A BERT-mini MSRA tagger and MSRA QA model (randomly initialised, 3 epochs on 5,000
# training records each), exported in every format and verified against its Keras
# model: the README's tagger and QA export table. What it measures is what each
# format and quantization changes, not what pretraining buys (the fine-tuning table).
#   examples/export_tagger_qa.sh [DATA]      # DATA: ../shared/data by default
# Run again after an interruption (or to export again), it keeps the vocabulary and
# continues each run from its last epoch (--resume; a finished run is left as it is).
set -euo pipefail
data="${1:-../shared/data}"
mkdir -p runs/exports
if [ ! -f runs/exports/vocab_zh.txt ]; then
  kbl vocab --corpus "$data/pretrain/zh/peoples_daily_199801.txt.gz" --size 8000 \
    --out runs/exports/vocab_zh.txt
fi
common=(--init random --model mini --vocab runs/exports/vocab_zh.txt --seq-len 128
  --epochs 3 --max-train 5000 --resume)
kbl finetune --task tag "${common[@]}" --train "$data/ner/zh/msra.train.conll" \
  --dev "$data/ner/zh/msra.dev.conll" --out runs/exports/ner-zh-msra-random
kbl finetune --task qa "${common[@]}" --doc-stride 64 --max-query-len 32 \
  --train "$data/qa/zh/msra_mrc.train.json" --dev "$data/qa/zh/msra_mrc.dev.json" \
  --out runs/exports/qa-zh-msra-random
for name in ner-zh-msra-random qa-zh-msra-random; do
  kbl export --model "runs/exports/$name" --format all --out "runs/exports/$name-export"
  kbl verify --export "runs/exports/$name-export" \
    --json "runs/exports/$name.verify.json"
done
