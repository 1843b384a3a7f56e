"""Mean and spread over seeds of the fine-tuning table: reads the results.json that
`examples/finetune_table.py --seed N --out DIR` wrote for several seeds (each seed
draws its own training sample and initialisation, the same for every row) and prints,
per task and metric, each row's values, their mean and sample standard deviation, and
the paired difference pretrained - random.

    for s in 0 1 2; do python examples/finetune_table.py ... --only sentiment-en \\
        --seed $s --out runs/table-s$s; done
    python examples/seed_spread.py runs/table-s0 runs/table-s1 runs/table-s2

A task is reported where every directory has its pretrained and random rows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from finetune_table import METRICS, TASKS, percent_scale


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {sd:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="finetune_table --out directories")
    args = parser.parse_args()
    results = []
    for directory in args.dirs:
        path = os.path.join(directory, "results.json")
        if not os.path.exists(path):
            parser.error(f"{path}: not found; run examples/finetune_table.py first")
        with open(path) as f:
            results.append(json.load(f))
    lines = [
        f"| task | dev metric | pretrained | random init | pretrained - random "
        f"| classical baseline | each seed, pretrained/random ({len(results)}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _, task, *_ in TASKS:
        runs = [r.get(name, {}) for r in results]
        if not all(run.get("pretrained") and run.get("random") for run in runs):
            continue
        for key, label in METRICS[task]:
            scale = percent_scale(task)
            pretrained, random, baseline = (
                [run[row]["dev"][key] * scale for run in runs if run.get(row)]
                for row in ("pretrained", "random", "baseline")
            )
            pairs = list(zip(pretrained, random, strict=True))
            each = ", ".join(f"{p:.1f}/{r:.1f}" for p, r in pairs)
            lines.append(
                f"| {name} | {label} | {spread(pretrained)} | {spread(random)} | "
                f"{spread([p - r for p, r in pairs])} | "
                f"{spread(baseline) if baseline else 'n/a'} | {each} |"
            )
    if len(lines) == 2:
        parser.error("no task has both fine-tuned rows in every directory")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
