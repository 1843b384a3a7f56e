"""What every benchmark shares: where the data is, one learned vocabulary, the
machine's description, and atomic JSON writes."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# ../shared/data beside the checkout, as CI lays it out (KBL_SHARED_DATA overrides).
SHARED = os.environ.get(
    "KBL_SHARED_DATA", os.path.join(os.path.dirname(REPO), "shared", "data")
)
SOTU = os.path.join(SHARED, "pretrain", "en", "sotu.txt.gz")
WORK = os.path.join(HERE, ".work")  # caches (git-ignored)
RESULTS = os.path.join(HERE, "results")
VOCAB_SIZE = 8192

PACKAGES = (
    "keras-bert-lite",
    "tensorflow",
    "tensorflow-text",
    "keras",
    "keras-hub",
    "transformers",
    "tokenizers",
    "torch",
    "ai-edge-litert",
    "onnxruntime",
    "tf2onnx",
    "numpy",
)


def require(path: str) -> str:
    """`path`, or exit with what is missing and where it is expected."""
    if not os.path.exists(path):
        raise SystemExit(
            f"{path}: not found. The benchmarks read ../shared/data beside the "
            "checkout (or set KBL_SHARED_DATA to its path)."
        )
    return path


def vocabulary(corpus: str = SOTU, work: str = WORK) -> str:
    """vocab.txt of an 8,192-piece uncased WordPiece vocabulary learned once from
    `corpus` by our learner (as `kbl pretrain` would), cached in `work`; every
    benchmark and every contender in it uses the same file."""
    path = os.path.join(work, "vocab.txt")
    if not os.path.exists(path):
        from keras_bert_lite.data.pretraining import corpus_tokenizer

        os.makedirs(work, exist_ok=True)
        corpus_tokenizer([require(corpus)], "auto", None, VOCAB_SIZE, True).save(work)
    return path


def versions() -> dict[str, str | None]:
    """Installed versions, from package metadata (nothing heavy is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, Any]:
    """CPU model and the vector extensions that decide these kernels' speed, cores,
    memory, load and library versions."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            lines = f.read().splitlines()
        info["cpu"] = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in lines
                if ln.startswith("model name")
            ),
            None,
        )
        flags = set(
            next((ln for ln in lines if ln.startswith("flags")), ":")
            .split(":", 1)[1]
            .split()
        )
        wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
        info["flags"] = [name for name in wanted if name in flags]
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    info["loadavg_at_start"] = list(os.getloadavg())
    info["versions"] = versions()
    return info


def write_json(path: str, value: Any) -> None:
    """Writes through a temporary name, so an interrupted run leaves no half file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def publish(path: str, report: dict[str, Any], text: str) -> None:
    """Writes the report's JSON to `path` and prints its markdown `text`."""
    write_json(path, report)
    print()
    print(text)
    print(f"wrote {path}")
