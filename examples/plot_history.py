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
    if all(r.get("step") for r in rows):  # logged since history.csv has the column
        steps = [int(r["step"]) for r in rows]

    def plot(axes, key, style):
        """Training and held-out curves of one metric, over the evaluations that
        logged it (a metric added by a later version starts mid-run)."""
        for name, marker, label in (
            (key, None, "train"),
            ("val_" + key, "o", "held-out"),
        ):
            points = [
                (s, float(r[name]))
                for s, r in zip(steps, rows, strict=True)
                if r.get(name)
            ]
            if points:
                axes.plot(
                    *zip(*points, strict=True),
                    style,
                    marker=marker,
                    label=f"{label} {key}",
                )

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("mlm_loss", "-"), ("nsp_loss", "--")):
        plot(left, key, style)
    left.set_xlabel("step" if config["train"].get("eval_every") else "evaluation")
    left.set_ylabel("loss")
    left.legend()
    for key, style in (
        ("mlm_accuracy", "-"),
        ("mlm_hidden_accuracy", ":"),
        ("nsp_accuracy", "--"),
    ):
        plot(right, key, style)
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
