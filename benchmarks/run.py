"""Every benchmark, one after another, then one summary of the ratios against goals.

    python benchmarks/run.py [--quick] [--only data_pipeline,pretrain_throughput,...]

Runs data_pipeline.py, pretrain_throughput.py, inference.py and memory.py (each
writes benchmarks/results/NAME.json, or NAME_quick.json with --quick), then reads
the four reports and writes benchmarks/results/summary.md (and summary.json): each
goal of the benchmark issue, the measured ratio, and whether it is met. Run it on an
otherwise idle machine: the numbers are only as good as the quiet they had.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Any

from common import HERE, RESULTS, machine, read_json, write_json

BENCHMARKS = ("data_pipeline", "pretrain_throughput", "inference", "memory")


def result_path(name: str, quick: bool) -> str:
    return os.path.join(RESULTS, f"{name}_quick.json" if quick else f"{name}.json")


def _ratio(value: float | None, goal: float, at_most: bool = False) -> dict:
    met = None if value is None else (value <= goal if at_most else value >= goal)
    return {"value": value, "goal": goal, "at_most": at_most, "met": met}


def goals(reports: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's goals, each with its measured value (None when not measured)."""
    rows: list[dict[str, Any]] = []
    data = reports.get("data_pipeline") or {}
    ratios = data.get("ratios", {})
    for ours, kind in (
        ("ours", "data pipeline (real tokens/s, NSP pairs included)"),
        ("ours_streamed", "data pipeline, corpus over the cache budget (streamed)"),
    ):
        for peer, goal in (("huggingface", 2.0), ("keras_hub", 1.3)):
            rows.append(
                {
                    "benchmark": kind,
                    "what": f"{ours} / {peer}",
                    **_ratio(ratios.get(f"{ours}_vs_{peer}"), goal),
                }
            )
    train = reports.get("pretrain_throughput") or {}
    ours_data = data.get("results", {}).get("ours", {}).get("tokens_per_second")
    best = train.get("best", {})
    step = best.get("mini", {}).get("ours", {}).get("tokens_per_second")
    rows.append(
        {
            "benchmark": "data pipeline vs training",
            "what": "ours pipeline tokens/s / ours mini training tokens/s",
            **_ratio(ours_data / step if ours_data and step else None, 10.0),
        }
    )
    for size, ratios in train.get("ratios", {}).items():
        for peer, goal in (("keras_hub", 1.5), ("pytorch", 2.0)):
            rows.append(
                {
                    "benchmark": f"pretraining throughput, {size}",
                    "what": f"ours best / {peer} best",
                    **_ratio(ratios.get(f"ours_best / {peer}_best"), goal),
                }
            )
        mfu = best.get(size, {}).get("ours", {}).get("mfu_vs_bf16_peak")
        rows.append(
            {
                "benchmark": f"pretraining MFU, {size}",
                "what": "ours best vs the measured bf16 matmul peak",
                **_ratio(mfu, 0.25),
            }
        )
    inference = reports.get("inference") or {}
    # Both int8 files `kbl export` writes: full int8 (activations too) and
    # dynamic-range int8 (weights), each with the tokenizer inside.
    for key, what in (("tflite_int8", "full int8"), ("tflite_dynamic", "dynamic int8")):
        rows.append(
            {
                "benchmark": "inference p50, batch 1, one thread",
                "what": f"TFLite {what} (tokenizer inside) / ORT + HF tokenizer (best)",
                **_ratio(
                    inference.get("ratios", {}).get(f"{key} p50 / ORT best p50"),
                    0.5,
                    at_most=True,
                ),
            }
        )
    memory = reports.get("memory") or {}
    for kind, value in memory.get("growth", {}).items():
        rows.append(
            {
                "benchmark": "memory",
                "what": f"peak RSS {kind}, largest / smallest corpus",
                **_ratio(value, 1.2, at_most=True),
            }
        )
    rows.append(
        {
            "benchmark": "GPU MFU, base, JAX bf16",
            "what": "needs a lent GPU machine (see README)",
            **_ratio(None, 0.45),
        }
    )
    return rows


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info.get('cpu')}, {info.get('usable_cores')} cores, "
        f"{info.get('memory_gib')} GiB; flags {', '.join(info.get('flags', []))}.",
        "",
        "| benchmark | ratio | measured | goal | met |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        value = row["value"]
        shown = "not measured" if value is None else f"{value:.2f}"
        goal = ("<= " if row["at_most"] else ">= ") + f"{row['goal']:g}"
        met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
        lines.append(
            f"| {row['benchmark']} | {row['what']} | {shown} | {goal} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs: checks")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help="comma list of benchmarks"
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="only read the existing reports and write the summary",
    )
    args = parser.parse_args(argv)
    chosen = args.only.split(",")
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}")
    failed = []
    if not args.summary_only:
        for name in chosen:
            command = [sys.executable, os.path.join(HERE, f"{name}.py")]
            command += ["--out", result_path(name, args.quick)]
            if args.quick:
                command.append("--quick")
            print(f"=== {name}: {' '.join(command[1:])}", flush=True)
            started = time.perf_counter()
            code = subprocess.call(command)
            print(f"=== {name}: exit {code}, {time.perf_counter() - started:.0f} s")
            if code:
                failed.append(name)
    reports = {name: read_json(result_path(name, args.quick)) for name in BENCHMARKS}
    rows = goals(reports)
    info = machine()
    stem = "summary_quick" if args.quick else "summary"
    write_json(os.path.join(RESULTS, f"{stem}.json"), {"machine": info, "goals": rows})
    text = markdown(rows, info)
    tmp = os.path.join(RESULTS, f"{stem}.md.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, os.path.join(RESULTS, f"{stem}.md"))
    print(text)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
