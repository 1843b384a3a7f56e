"""The run directory: the unit every command reads and writes.

    RUN/config.json        {"kbl_run": 1, "task", "model", "data", "train", ...}
    RUN/vocab.txt          one token per line
    RUN/model.weights.h5   the trained weights (loaded into a model rebuilt from config)
    RUN/history.csv        one row per epoch: losses and accuracies, train and held out
    RUN/metrics.json       final held-out metrics and measured throughput
    RUN/tensorboard/       TensorBoard logs
    RUN/checkpoints/       resume state (weights + optimizer) and state.json

A model is rebuilt from config.json (plain data, checked against the schema) and then
given its weights: loading a run never deserialises code or pickles.
"""

from __future__ import annotations

import os

from keras_bert_lite.config import (
    CONFIG_VERSION,
    BertConfig,
    DataConfig,
    TrainConfig,
)
from keras_bert_lite.errors import KblError
from keras_bert_lite.io import read_json

CONFIG = "config.json"
VOCAB = "vocab.txt"
WEIGHTS = "model.weights.h5"
TASKS = ("classify", "tag", "qa")


def _what_it_is(directory: str) -> str:
    """What a directory without config.json is, and what to give instead."""
    exported = os.path.join(directory, "export.json")
    if os.path.exists(exported):
        try:
            came_from = f" ({read_json(exported).get('run')})"
        except (KblError, AttributeError):
            came_from = ""
        return (
            f"{directory} is an export, not a run: give the run directory it was "
            f"exported from{came_from}, or score the export with `kbl verify "
            f"--export {directory}`"
        )
    if os.path.exists(os.path.join(directory, "prepare.json")):
        return (
            f"{directory} holds prepared records, not a run: pretrain on them with "
            f"`kbl pretrain --records {directory} --out RUN`"
        )
    return (
        f"{directory} is not a run directory (kbl pretrain, finetune and import "
        "write them)"
    )


def read_config(run: str) -> dict:
    """A run's config.json, checked against the schema: the version, the sections
    (unknown keys and wrong types are errors naming the file) and the task."""
    path = os.path.join(run, CONFIG)
    if not os.path.isdir(run):
        raise KblError(f"{run}: run directory not found")
    if not os.path.exists(path):
        raise KblError(f"{path}: file not found; {_what_it_is(run)}")
    config = read_json(path)
    if not isinstance(config, dict) or config.get("kbl_run") != CONFIG_VERSION:
        found = config.get("kbl_run") if isinstance(config, dict) else None
        raise KblError(
            f"{path}: not a keras-bert-lite run directory of version "
            f"{CONFIG_VERSION} (found kbl_run={found!r}); "
            "retrain it with this version"
        )
    for section, schema in (("model", BertConfig), ("data", DataConfig)):
        if section not in config:
            raise KblError(f"{path}: the '{section}' section is missing")
        schema.from_dict(config[section], f"{path}: {section}")
    if "train" in config:
        TrainConfig.from_dict(config["train"], f"{path}: train")
    task = config.get("task")
    if task not in ("pretraining", *TASKS):
        raise KblError(
            f"{path}: unknown task {task!r}; expected pretraining or one of "
            f"{', '.join(TASKS)}"
        )
    return config


def load_tokenizer(run: str):
    """The tokenizer stored in a run directory (callable on a batch of strings)."""
    from keras_bert_lite.text.tokenizer import BertTokenizer

    config = read_config(run)
    lowercase = DataConfig.from_dict(config["data"], f"{run}/{CONFIG}: data").lowercase
    return BertTokenizer.from_file(os.path.join(run, VOCAB), lowercase=lowercase)


def classifies_pairs(run: str, config: dict) -> bool:
    """Whether a classification run takes sentence pairs (`text_a`, `text_b`).

    Runs record it as task_options.pair; runs from before that are told apart by the
    first record of their dev (or training) file.
    """
    from keras_bert_lite.data import tasks

    options = config.get("task_options") or {}
    if options.get("pair") is not None:
        return bool(options["pair"])
    for path in (config.get("dev_file"), config.get("train_file")):
        if path and os.path.exists(path):
            return "text_a" in tasks.read_classification(path, require_labels=False)[0]
    raise KblError(
        f"{os.path.join(run, CONFIG)}: cannot tell whether the run classifies "
        "single texts or pairs (no task_options.pair, and neither its train_file "
        "nor dev_file exists)"
    )


def build_task_model(
    task: str,
    backbone,
    num_labels: int,
    kind: str = "single",
    dropout: float = 0.1,
    crf: bool = False,
    pooling: str = "cls",
):
    """The fine-tuning model of a task ("classify", "tag" or "qa") on a backbone."""
    from keras_bert_lite.models import (
        BertClassifier,
        BertQuestionAnswerer,
        BertTokenClassifier,
    )

    if task == "classify":
        return BertClassifier(
            backbone,
            max(num_labels, 1),
            multi_label=kind == "multi_label",
            regression=kind == "regression",
            dropout=dropout,
            pooling=pooling,
        )
    if task == "tag":
        return BertTokenClassifier(backbone, num_labels, dropout=dropout, crf=crf)
    if task == "qa":
        return BertQuestionAnswerer(backbone)
    raise KblError(f"config.json: unknown task {task!r}")


def build_model(config: dict, dtype=None):
    """The (untrained) Keras model a run's config describes."""
    from keras_bert_lite.models import BertBackbone, BertPretrainer

    model_config = BertConfig.from_dict(config["model"], f"{CONFIG}: model")
    data_config = DataConfig.from_dict(config["data"], f"{CONFIG}: data")
    backbone = BertBackbone.from_bert_config(model_config, dtype=dtype)
    task = config.get("task")
    if task == "pretraining":
        return BertPretrainer(backbone, nsp=data_config.nsp)
    options = config.get("task_options")
    if not isinstance(options, dict):
        raise KblError("config.json: a fine-tuned run needs 'task_options'")
    return build_task_model(
        task,
        backbone,
        int(options.get("num_labels", 0)),
        str(options.get("label_kind", "single")),
        float(options.get("dropout", 0.1)),
        crf=bool(options.get("crf", False)),
        pooling=str(options.get("pooling", "cls")),
    )


def load(run: str, compile: bool = False):
    """The Keras model stored in a run directory, with its trained weights."""
    config = read_config(run)
    model = build_model(config)
    path = os.path.join(run, WEIGHTS)
    if not os.path.exists(path):
        raise KblError(
            f"{path}: no trained weights (did the run finish? resume it with "
            "`kbl pretrain --resume --out RUN`)"
        )
    model.load_weights(path)
    return model
