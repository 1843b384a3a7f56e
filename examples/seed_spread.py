"""Mean and spread over seeds of the fine-tuning table: reads the results.json that
`examples/finetune_table.py --seed N --out DIR` wrote for several seeds (each seed
draws its own training sample and initialisation, the same for every row) and prints,
per task and metric, each row's values, their mean and sample standard deviation, the
paired difference pretrained - random and a paired t-test of it.

    for s in 0 1 2; do python examples/finetune_table.py ... --only sentiment-en \\
        --seed $s --out runs/table-s$s; done
    python examples/seed_spread.py runs/table-s0 runs/table-s1 runs/table-s2

Each task is reported over the directories that have both its pretrained and random
rows (the "seeds" column), so tasks run with different numbers of seeds share a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from finetune_table import METRICS, TASKS, percent_scale


def spread(values: list[float]) -> str:
    """Mean ± sample standard deviation (one value: the value, no spread)."""
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def paired_p(pretrained: list[float], random: list[float]) -> str:
    """Two-sided paired t-test of pretrained against random over the seeds."""
    if len(pretrained) < 2 or pretrained == random:
        return "n/a"
    from scipy import stats

    return f"{stats.ttest_rel(pretrained, random).pvalue:.3f}"


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
        "| task | dev metric | seeds | pretrained | random init | pretrained - random "
        "| paired t-test p | classical baseline | each seed, pretrained/random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, task, *_ in TASKS:
        # The directories that have both fine-tuned rows of this task.
        runs = [
            r[name]
            for r in results
            if r.get(name, {}).get("pretrained") and r[name].get("random")
        ]
        if not runs:
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
                f"| {name} | {label} | {len(pairs)} | {spread(pretrained)} | "
                f"{spread(random)} | {spread([p - r for p, r in pairs])} | "
                f"{paired_p(pretrained, random)} | "
                f"{spread(baseline) if baseline else 'n/a'} | {each} |"
            )
    if len(lines) == 2:
        parser.error("no task has both fine-tuned rows in any directory")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
