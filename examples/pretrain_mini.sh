#!/usr/bin/env bash
# Pretrains the BERT-mini runs behind the README's fine-tuning table, from raw text to
# a run directory with its weights, and plots the curves:
#   examples/pretrain_mini.sh en   # State of the Union addresses -> runs/sotu-mini
#   examples/pretrain_mini.sh zh   # People's Daily, January 1998 -> runs/pd-mini
# The recipe that leaves BERT's first plateau on a CPU budget (README, "Pretraining on
# State of the Union addresses"): no dropout, peak learning rate 3e-4 (1e-3 collapsed
# attention heads onto [SEP] and stalled), 5% warm-up, batch 32, a 20,000-step
# schedule of which the table's models trained the first part (--until):
#   en: 14,000 steps of 64 tokens (0.55-0.75 s each on 2 CPU cores; the table's run
#       stopped at 6,500 and 10,000 and went on with `--resume --until N`);
#   zh: 4,000 steps of 128 tokens (on BERT's first plateau all along), then 64 tokens
#       (where it left the plateau), every 3,000th step reached after 500 of 128, the
#       length its tasks are fine-tuned at: 6,000, 9,000 and 12,000 are checkpoints to
#       fine-tune from, the table's the last (~1.1 s per step of 128 and ~0.65 s of 64
#       on 2 quiet cores).
# Each phase ends at a checkpoint with the weights that `kbl finetune --init runs/NAME`
# and examples/finetune_table.py load. Run again after an interruption, the script
# skips the phases the run has reached and continues the one it stopped in from its
# last checkpoint (`kbl pretrain --out runs/NAME --resume --until N`; a later N trains
# further along the same schedule). DATA defaults to ../shared/data.
set -euo pipefail
data="${DATA:-../shared/data}"
recipe=(--model mini --dropout 0 --steps 20000 --learning-rate 3e-4 --warmup 0.05
        --eval-every 500 --eval-batches 50)

reached() {  # the step of the run's last checkpoint (0: none yet)
  python -c 'import json, os, sys
path = os.path.join(sys.argv[1], "checkpoints", "state.json")
print(json.load(open(path))["step"] if os.path.exists(path) else 0)' "runs/$name"
}

phase() {  # phase SEQ_LEN UNTIL: train to step UNTIL at SEQ_LEN tokens
  local step
  step=$(reached)
  if [ "$step" -ge "$2" ]; then
    echo "runs/$name: at step $step, past this phase (--until $2)"
  elif [ -f "runs/$name/config.json" ]; then
    kbl pretrain --out "runs/$name" --resume --seq-len "$1" --until "$2"
  else
    kbl pretrain --corpus "$corpus" --out "runs/$name" "${recipe[@]}" \
        --seq-len "$1" --until "$2"
  fi
}

case "${1:-en}" in
  en) name=sotu-mini corpus="$data/pretrain/en/sotu.txt.gz"
      phase 64 14000
      title="BERT-mini on State of the Union addresses (2 CPU cores)" ;;
  zh) name=pd-mini corpus="$data/pretrain/zh/peoples_daily_199801.txt.gz"
      phase 128 4000
      for until in 6000 9000 12000; do
        phase 64 $((until - 500))
        phase 128 "$until"
      done
      title="BERT-mini on People's Daily 1998-01 (2 CPU cores)" ;;
  *) echo "usage: $0 en|zh" >&2; exit 2 ;;
esac
python examples/plot_history.py "runs/$name" "docs/$name.png" --title "$title"
