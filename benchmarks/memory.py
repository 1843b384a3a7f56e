"""Peak memory of pretraining against corpus size: a corpus larger than memory must
stream, so peak RSS should stay flat as the corpus grows.

    python benchmarks/memory.py [--quick] [--scales 1 10] [--out JSON]

The corpus at scale k is k shards, each a copy of the State of the Union corpus
(2.1M word pieces), in one directory, as a sharded corpus is given. Each
measurement runs in a fresh process and reports its own peak resident set size
(`ru_maxrss`):

- `pipeline`: one whole pass of `pretraining_dataset` (read, tokenize, NSP pairs,
  mask, batch) over every shard;
- `pretrain`: `kbl.training.pretrain` with a given vocabulary, counting the
  held-out batches (up to the evaluation cap), then 30 training steps of BERT-mini
  and one evaluation (the step count is fixed: the model's memory does not depend
  on the corpus, the reading does). Vocabulary learning is left out:
  tensorflow-text's learner counts distinct words, and its time, not its memory,
  grows with the corpus.

Goal: peak RSS at 10x within +20% of 1x.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

from common import REPO, RESULTS, SOTU, machine, require, vocabulary, write_json

PIPELINE = """
import resource, sys, time
from keras_bert_lite.config import DataConfig
from keras_bert_lite.data.pretraining import pretraining_dataset
from keras_bert_lite.text import BertTokenizer
corpus, vocab = sys.argv[1], sys.argv[2]
start = time.perf_counter()
ds = pretraining_dataset([corpus], BertTokenizer.from_file(vocab),
                         config=DataConfig(seq_len=128), batch_size=64)
batches = sum(1 for _ in ds)
print(batches, time.perf_counter() - start,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

PRETRAIN = """
import resource, sys, time
from keras_bert_lite.training import pretrain
corpus, out, steps, vocab = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
start = time.perf_counter()
result = pretrain([corpus], out, model="mini", vocab=vocab, seq_len=128,
                  batch_size=32, steps=steps, eval_every=steps, verbose=0,
                  log=lambda line: None)
print(result.steps, time.perf_counter() - start,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_corpus(source: str, scale: int, root: str) -> str:
    """A directory of `scale` shards, each a copy of `source` (gzip)."""
    folder = os.path.join(root, f"x{scale}")
    os.makedirs(folder, exist_ok=True)
    for k in range(scale):
        shutil.copyfile(source, os.path.join(folder, f"shard-{k:03d}.txt.gz"))
    return folder


def measure(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO),
    )
    if done.returncode:
        return {"error": done.stderr[-2000:]}
    count, seconds, peak_kib = done.stdout.strip().splitlines()[-1].split()
    return {
        "count": int(count),
        "seconds": round(float(seconds), 1),
        "peak_rss_mib": round(int(peak_kib) / 1024, 1),
    }


def pieces(source: str) -> int:
    with gzip.open(source, "rt", encoding="utf-8") as f:
        return sum(len(line.split()) for line in f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default=SOTU)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="scales 1 and 2")
    parser.add_argument("--out", default=os.path.join(RESULTS, "memory.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.scales, args.steps = [1, 2], 5
    vocab = vocabulary(require(args.corpus))
    report = {
        "benchmark": "memory",
        "machine": machine(),
        "corpus": os.path.basename(args.corpus),
        "words_per_shard": pieces(args.corpus),
        "results": {},
    }
    with tempfile.TemporaryDirectory() as root:
        for scale in args.scales:
            corpus = make_corpus(args.corpus, scale, root)
            row = {}
            print(f"memory: scale {scale}x, pipeline pass ...", flush=True)
            row["pipeline"] = measure(PIPELINE, corpus, vocab)
            print(f"memory: scale {scale}x, pretrain ...", flush=True)
            out = os.path.join(root, f"run-{scale}")
            row["pretrain"] = measure(PRETRAIN, corpus, out, str(args.steps), vocab)
            report["results"][f"{scale}x"] = row
    base, top = f"{args.scales[0]}x", f"{args.scales[-1]}x"
    report["growth"] = {
        kind: report["results"][top][kind]["peak_rss_mib"]
        / report["results"][base][kind]["peak_rss_mib"]
        for kind in ("pipeline", "pretrain")
        if "error" not in report["results"][top][kind]
        and "error" not in report["results"][base][kind]
    }
    report["goal"] = "peak RSS at the largest scale within 1.2x of the smallest"
    write_json(args.out, report)
    print("| corpus | pipeline pass: batches, s, peak MiB | pretrain: s, peak MiB |")
    print("|---|---|---|")
    for scale, row in report["results"].items():
        p, t = row["pipeline"], row["pretrain"]
        print(
            f"| {scale} | {p.get('count')}, {p.get('seconds')}, "
            f"{p.get('peak_rss_mib')} | {t.get('seconds')}, {t.get('peak_rss_mib')} |"
        )
    print(json.dumps(report["growth"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
