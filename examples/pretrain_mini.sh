#!/usr/bin/env bash
# Pretrains the BERT-mini runs behind the README's results, from raw text to a run
# directory, and plots the curves:
#   examples/pretrain_mini.sh en   # State of the Union addresses -> runs/sotu-mini
#   examples/pretrain_mini.sh zh   # People's Daily, January 1998 -> runs/pd-mini
# Each is 1,400 steps of 32 x 128 tokens: about 24 minutes of training steps and 36 of
# wall time on 2 CPU cores. DATA defaults to ../shared/data.
set -euo pipefail
data="${DATA:-../shared/data}"
case "${1:-en}" in
  en) corpus="$data/pretrain/en/sotu.txt.gz"; name=sotu-mini
      title="BERT-mini on State of the Union addresses (2 CPU cores)" ;;
  zh) corpus="$data/pretrain/zh/peoples_daily_199801.txt.gz"; name=pd-mini
      title="BERT-mini on People's Daily 1998-01 (2 CPU cores)" ;;
  *) echo "usage: $0 en|zh" >&2; exit 2 ;;
esac
kbl pretrain --corpus "$corpus" --out "runs/$name" --model mini --seq-len 128 \
    --steps 1400 --json "runs/$name.json"
python examples/plot_history.py "runs/$name" "docs/$name.png" --title "$title"
