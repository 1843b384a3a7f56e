#!/usr/bin/env bash
# Pretrains the BERT-mini runs behind the README's results, from raw text to a run
# directory, and plots the curves:
#   examples/pretrain_mini.sh en   # State of the Union addresses -> runs/sotu-mini
#   examples/pretrain_mini.sh zh   # People's Daily, January 1998 -> runs/pd-mini
# The recipe that leaves BERT's first plateau on a CPU budget (README, "Pretraining on
# State of the Union addresses"): no dropout, peak learning rate 3e-4 (1e-3 collapsed
# attention heads onto [SEP] and stalled), 5% warm-up, batch 32; English 64-token
# sequences (its tasks are fine-tuned at 64), Chinese 128. STEPS (default 20000) steps
# take ~0.75 s (en) and ~1.1-1.5 s (zh) each on 2 CPU cores: hours, so stop it
# whenever you like and continue with
#   kbl pretrain --out runs/NAME --resume
# or end it at its last checkpoint (every 500 steps), which writes the weights that
# `kbl finetune --init runs/NAME` and examples/finetune_table.py load:
#   kbl pretrain --out runs/NAME --resume --steps <the checkpoint's step>
# DATA defaults to ../shared/data.
set -euo pipefail
data="${DATA:-../shared/data}"
case "${1:-en}" in
  en) corpus="$data/pretrain/en/sotu.txt.gz"; name=sotu-mini; seq_len=64
      title="BERT-mini on State of the Union addresses (2 CPU cores)" ;;
  zh) corpus="$data/pretrain/zh/peoples_daily_199801.txt.gz"; name=pd-mini; seq_len=128
      title="BERT-mini on People's Daily 1998-01 (2 CPU cores)" ;;
  *) echo "usage: $0 en|zh" >&2; exit 2 ;;
esac
kbl pretrain --corpus "$corpus" --out "runs/$name" --model mini --dropout 0 \
    --seq-len "$seq_len" --steps "${STEPS:-20000}" --learning-rate 3e-4 --warmup 0.05 \
    --eval-every 500 --eval-batches 50 --json "runs/$name.json"
python examples/plot_history.py "runs/$name" "docs/$name.png" --title "$title"
