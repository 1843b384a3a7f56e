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

`--against DIR...` (one per directory, same seeds, same order) compares the pretrained
rows with those of another model's table, e.g. a model adapted to the task's text
against the one it started from: its rows, the paired difference and its t-test.

`--random DIR...` (one per directory, same seeds, same order) takes the random rows
from other tables, e.g. each row at its own learning rate (`finetune_table.py
--learning-rate`): the pretrained rows of DIR against the random rows of these.
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


def read_results(directories: list[str], parser) -> list[dict]:
    results = []
    for directory in directories:
        path = os.path.join(directory, "results.json")
        if not os.path.exists(path):
            parser.error(f"{path}: not found; run examples/finetune_table.py first")
        with open(path) as f:
            results.append(json.load(f))
    return results


def dev_values(tables, seeds, name, row, key, scale) -> list[float]:
    """One row's dev metric of a task in each of the chosen tables that has it."""
    return [
        tables[i][name][row]["dev"][key] * scale
        for i in seeds
        if tables[i][name].get(row)
    ]


def baseline_dev(row: dict) -> dict | None:
    return (row.get("baseline") or {}).get("dev")


def check_same_samples(option, dirs, results, sources, tables, parser) -> None:
    """Each table of `option` must have been trained on the same sample as the
    table at its place in `dirs`. The baseline is fitted to the seed's training
    sample: the same sample gives the same score, another seed (almost surely) does
    not."""
    for directory, table, source, other in zip(
        dirs, results, sources, tables, strict=True
    ):
        for name, row in table.items():
            theirs = baseline_dev(other.get(name) or {})
            if theirs is not None and baseline_dev(row) != theirs:
                parser.error(
                    f"{option} {source}: its {name} baseline differs from that of "
                    f"{directory}, so its rows were trained on another sample "
                    "(another --seed or --max-train); give the directories in the "
                    "same seed order"
                )


def use_random_rows(results, randoms) -> None:
    """Replaces each table's random rows with those of the table at the same place
    in `randoms`; a task that table has no random row for loses its own."""
    for table, other in zip(results, randoms, strict=True):
        for name, row in table.items():
            if not other.get(name, {}).get("random"):
                row.pop("random", None)  # that seed has no random row to compare
            else:
                row["random"] = other[name]["random"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="finetune_table --out directories")
    parser.add_argument(
        "--against",
        nargs="+",
        metavar="DIR",
        help="another model's table directories, one per DIR in the same order",
    )
    parser.add_argument(
        "--random",
        nargs="+",
        metavar="DIR",
        help="take the random rows from these table directories, one per DIR in "
        "the same order",
    )
    args = parser.parse_args()
    results = read_results(args.dirs, parser)
    others = read_results(args.against, parser) if args.against else None
    randoms = read_results(args.random, parser) if args.random else None
    for option, sources, tables in (
        ("--against", args.against, others),
        ("--random", args.random, randoms),
    ):
        if tables is None:
            continue
        if len(tables) != len(results):
            parser.error(
                f"{option}: give one directory per DIR, in the same order "
                f"({len(results)} and {len(tables)} given)"
            )
        check_same_samples(option, args.dirs, results, sources, tables, parser)
    if randoms is not None:
        use_random_rows(results, randoms)
    extra = " against | pretrained - against | paired t-test p |" if others else ""
    lines = [
        "| task | dev metric | seeds | pretrained | random init | pretrained - random "
        f"| paired t-test p | classical baseline |{extra} each seed, pretrained/random"
        + ("/against |" if others else " |"),
        "|---|---|---|---|---|---|---|---|"
        + ("---|---|---|" if others else "")
        + "---|",
    ]
    for name, _, task, *_ in TASKS:
        # The seeds that have both fine-tuned rows of this task (and the other
        # model's pretrained row).
        seeds = [
            i
            for i, r in enumerate(results)
            if r.get(name, {}).get("pretrained")
            and r[name].get("random")
            and (others is None or others[i].get(name, {}).get("pretrained"))
        ]
        if not seeds:
            continue
        for key, label in METRICS[task]:
            scale = percent_scale(task)
            pretrained, random, baseline = (
                dev_values(results, seeds, name, row, key, scale)
                for row in ("pretrained", "random", "baseline")
            )
            columns = [
                spread(pretrained),
                spread(random),
                spread([p - r for p, r in zip(pretrained, random, strict=True)]),
                paired_p(pretrained, random),
                spread(baseline) if baseline else "n/a",
            ]
            each = list(zip(pretrained, random, strict=True))
            if others:
                other = dev_values(others, seeds, name, "pretrained", key, scale)
                columns += [
                    spread(other),
                    spread([p - o for p, o in zip(pretrained, other, strict=True)]),
                    paired_p(pretrained, other),
                ]
                each = list(zip(pretrained, random, other, strict=True))
            cells = " | ".join(columns)
            seed_values = ", ".join("/".join(f"{v:.1f}" for v in vs) for vs in each)
            lines.append(
                f"| {name} | {label} | {len(seeds)} | {cells} | {seed_values} |"
            )
    if len(lines) == 2:
        parser.error("no task has both fine-tuned rows in any directory")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
