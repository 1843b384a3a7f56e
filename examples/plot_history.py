"""Plots a run's history.csv (losses and accuracies, training and held out) to a PNG.

pip install ".[plot]"
python examples/plot_history.py runs/sotu-mini docs/sotu-mini.png
"""

import argparse
import csv
import os


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory holding history.csv")
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(os.path.join(args.run, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    with open(os.path.join(args.run, "config.json")) as f:
        import json

        config = json.load(f)
    every = config["train"].get("eval_every") or 1
    steps = [(int(r["epoch"]) + 1) * every for r in rows]
    if not config["train"].get("eval_every"):
        steps = [int(r["epoch"]) + 1 for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("mlm_loss", "-"), ("nsp_loss", "--")):
        if key in rows[0]:
            left.plot(steps, [float(r[key]) for r in rows], style, label=f"train {key}")
            left.plot(
                steps,
                [float(r["val_" + key]) for r in rows],
                style,
                marker="o",
                label=f"held-out {key}",
            )
    left.set_xlabel("step" if config["train"].get("eval_every") else "evaluation")
    left.set_ylabel("loss")
    left.legend()
    for key, style in (("mlm_accuracy", "-"), ("nsp_accuracy", "--")):
        if key in rows[0]:
            right.plot(
                steps, [float(r[key]) for r in rows], style, label=f"train {key}"
            )
            right.plot(
                steps,
                [float(r["val_" + key]) for r in rows],
                style,
                marker="o",
                label=f"held-out {key}",
            )
    right.set_xlabel(left.get_xlabel())
    right.set_ylabel("accuracy")
    right.set_ylim(0, 1)
    right.legend()
    fig.suptitle(args.title or os.path.basename(os.path.normpath(args.run)))
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
