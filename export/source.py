"""What an export needs to know about a fine-tuned run, read once.

`ExportSource` gathers the task, labels, sequence length and tokenizer settings from a
run directory, so every exporter builds its graph from the same facts, and
`export.json` records them for `verify` and for serving code.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from keras_bert_lite import run as run_dir
from keras_bert_lite.errors import KblError

TASKS = ("classify", "tag", "qa")
EXPORT_VERSION = 1  # bumped when export.json changes incompatibly
EXPORT_JSON = "export.json"


@dataclasses.dataclass
class ExportSource:
    """A fine-tuned run, as its exports see it."""

    run: str  # absolute path of the run directory
    task: str  # "classify", "tag" or "qa"
    label_kind: str  # "single", "multi_label" or "regression" (classify only)
    labels: list[str]  # label (or tag) names; id = position; [] for QA/regression
    seq_len: int  # T: every raw-text input is packed to this many tokens
    pair: bool  # sentence-pair classification (`text` + `text_pair`)
    lowercase: bool  # uncased tokenizer
    options: dict[str, Any]  # the run's task_options
    train_file: str | None  # where the run was trained (for int8 calibration)
    dev_file: str | None  # the run's dev file (the default `verify` data)
    _model: Any = dataclasses.field(default=None, repr=False)
    _tokenizer: Any = dataclasses.field(default=None, repr=False)

    @property
    def model(self):
        """The Keras task model with its trained weights (loaded on first use)."""
        if self._model is None:
            self._model = run_dir.load(self.run)
        return self._model

    @property
    def tokenizer(self):
        """The run's `BertTokenizer` (the one training used)."""
        if self._tokenizer is None:
            self._tokenizer = run_dir.load_tokenizer(self.run)
        return self._tokenizer

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """Names of the raw-text inputs of the exported models."""
        if self.task == "qa":
            return ("question", "context")
        return ("text", "text_pair") if self.pair else ("text",)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The Keras model's outputs, in the order exporters list them."""
        if self.task == "qa":
            return ("end_logits", "start_logits")
        return ("logits", "probabilities")

    def describe(self) -> dict[str, Any]:
        """The facts `export.json` records."""
        return {
            "run": self.run,
            "task": self.task,
            "label_kind": self.label_kind,
            "labels": self.labels,
            "seq_len": self.seq_len,
            "pair": self.pair,
            "lowercase": self.lowercase,
            "text_inputs": list(self.text_inputs),
            "id_inputs": ["token_ids", "segment_ids", "padding_mask"],
            "train_file": self.train_file,
            "dev_file": self.dev_file,
            **(
                {"threshold": float(self.options.get("threshold", 0.5))}
                if self.label_kind == "multi_label"
                else {}
            ),
            **(self.decoding() if self.task == "tag" else {}),
            **(
                {
                    key: self.options[key]
                    for key in ("doc_stride", "max_query_len", "null_threshold")
                    if key in self.options
                }
                if self.task == "qa"
                else {}
            ),
        }

    def decoding(self) -> dict[str, Any]:
        """What a tagger's exports need to decode words as the run does: the tag
        scheme, and a CRF's learned transition scores."""
        from keras_bert_lite.training.finetune import transition_scores

        facts: dict[str, Any] = {"scheme": str(self.options.get("scheme", "BIO"))}
        if self.options.get("crf"):
            start, transitions, end = transition_scores(self.model)
            facts["crf"] = {
                "start": np.asarray(start, np.float64).tolist(),
                "transitions": np.asarray(transitions, np.float64).tolist(),
                "end": np.asarray(end, np.float64).tolist(),
            }
        return facts


def load_source(run: str) -> ExportSource:
    """Reads a fine-tuned run directory for export.

    Raises:
        KblError: naming the file, when the run is not a fine-tuned one or lacks
            weights, labels or vocabulary.
    """
    from keras_bert_lite.data import tasks

    config = run_dir.read_config(run)
    task = config.get("task")
    if task not in TASKS:
        raise KblError(
            f"{os.path.join(run, run_dir.CONFIG)}: task {task!r} is not a fine-tuned "
            "task; export a run written by `kbl finetune`"
        )
    weights = os.path.join(run, run_dir.WEIGHTS)
    if not os.path.exists(weights):
        raise KblError(f"{weights}: no trained weights; did the fine-tuning finish?")
    options = dict(config.get("task_options") or {})
    labels: list[str] = []
    if int(options.get("num_labels", 0)):
        labels = tasks.read_labels(os.path.join(run, "labels.txt"))
    lowercase = bool(config.get("data", {}).get("lowercase", True))
    seq_len = int(options.get("seq_len") or config.get("data", {}).get("seq_len", 128))
    train_file, dev_file = config.get("train_file"), config.get("dev_file")
    pair = False
    if task == "classify":
        pair = run_dir.classifies_pairs(run, config)
    return ExportSource(
        run=os.path.abspath(run),
        task=task,
        label_kind=str(options.get("label_kind", "single")),
        labels=labels,
        seq_len=seq_len,
        pair=pair,
        lowercase=lowercase,
        options=options,
        train_file=train_file,
        dev_file=dev_file,
    )


def as_source(run: str | ExportSource) -> ExportSource:
    """`run` itself when already read, else `load_source(run)`."""
    return run if isinstance(run, ExportSource) else load_source(run)
