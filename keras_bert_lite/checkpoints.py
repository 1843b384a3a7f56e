"""Published BERT checkpoints in and out: Google's TF1 layout and Hugging Face's.

    import_checkpoint(DIR, RUN)  Google (bert_config.json, vocab.txt,
                                 bert_model.ckpt.*) or Hugging Face (config.json,
                                 vocab.txt, model.safetensors | pytorch_model.bin)
                                 -> run directory
    export_hf(RUN, DIR)          run directory -> Hugging Face BERT folder

Both go through one canonical form: a dict of numpy arrays under the names and in the
layout of Hugging Face's `BertForPreTraining` (`bert.encoder.layer.0.attention.self.
query.weight`, Linear weights as (out, in)). Google's TF1 names map onto it one to one.

The run's vocabulary keeps this package's fixed special ids ([PAD] [UNK] [CLS] [SEP]
[MASK] = 0-4, which the data and export code rely on). Published vocabularies put them
elsewhere ([UNK] [CLS] [SEP] [MASK] = 100-103 in Google's), so the import swaps each
special token with the token at its fixed id, and swaps the embedding rows and the
masked-LM bias with them: the model is the same function of the text, and every other
token keeps its published id.

D = hidden_dim, I = intermediate_dim, V = vocabulary, P = positions, S = segments.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable

import numpy as np

from keras_bert_lite.config import CONFIG_VERSION, BertConfig, DataConfig, TrainConfig
from keras_bert_lite.errors import KblError

# Hugging Face architectures whose tensors are a subset of BertForPreTraining's.
HF_ARCHITECTURES = (
    "BertModel",
    "BertForPreTraining",
    "BertForMaskedLM",
    "BertForNextSentencePrediction",
)

# Hugging Face task classes (what `kbl export --format hf` writes for a fine-tuned
# run): their backbone imports, their head (tensors under this prefix) does not.
HF_TASK_HEADS = {
    "BertForSequenceClassification": "classifier.",
    "BertForTokenClassification": "classifier.",
    "BertForQuestionAnswering": "qa_outputs.",
    "BertForMultipleChoice": "classifier.",
}

_POOLER = ("bert.pooler.dense.weight", "bert.pooler.dense.bias")
_MLM = (
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.bias",
)
_NSP = ("cls.seq_relationship.weight", "cls.seq_relationship.bias")


# === Canonical tensors ===


def expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a BertForPreTraining of this config, by canonical name."""
    d, i, v = config.hidden_dim, config.intermediate_dim, config.vocabulary_size
    shapes = {
        "bert.embeddings.word_embeddings.weight": (v, d),
        "bert.embeddings.position_embeddings.weight": (config.max_sequence_length, d),
        "bert.embeddings.token_type_embeddings.weight": (config.num_segments, d),
        "bert.embeddings.LayerNorm.weight": (d,),
        "bert.embeddings.LayerNorm.bias": (d,),
    }
    for n in range(config.num_layers):
        p = f"bert.encoder.layer.{n}."
        for part in ("query", "key", "value"):
            shapes[f"{p}attention.self.{part}.weight"] = (d, d)
            shapes[f"{p}attention.self.{part}.bias"] = (d,)
        shapes[f"{p}attention.output.dense.weight"] = (d, d)
        shapes[f"{p}attention.output.dense.bias"] = (d,)
        shapes[f"{p}attention.output.LayerNorm.weight"] = (d,)
        shapes[f"{p}attention.output.LayerNorm.bias"] = (d,)
        shapes[f"{p}intermediate.dense.weight"] = (i, d)
        shapes[f"{p}intermediate.dense.bias"] = (i,)
        shapes[f"{p}output.dense.weight"] = (d, i)
        shapes[f"{p}output.dense.bias"] = (d,)
        shapes[f"{p}output.LayerNorm.weight"] = (d,)
        shapes[f"{p}output.LayerNorm.bias"] = (d,)
    shapes.update(
        {
            _POOLER[0]: (d, d),
            _POOLER[1]: (d,),
            _MLM[0]: (d, d),
            _MLM[1]: (d,),
            _MLM[2]: (d,),
            _MLM[3]: (d,),
            _MLM[4]: (v,),
            _NSP[0]: (2, d),
            _NSP[1]: (2,),
        }
    )
    return shapes


def weight_table(
    backbone, mlm_head=None, nsp_head=None, pooler: bool = True, task_head=None
):
    """(Keras variable, canonical names, transposed) for every weight of the model;
    `task_head` is a fine-tuned run's (output Dense layer, Hugging Face name).

    A variable with several names is their concatenation along its last axis (the
    fused query | key | value projection); `transposed` says the canonical tensors are
    (out, in) Linear weights while the Keras kernel is (in, out).
    """
    emb = backbone.embeddings
    table = [
        (emb.token_embedding.embeddings, ["bert.embeddings.word_embeddings.weight"]),
        (
            emb.position_embedding.embeddings,
            ["bert.embeddings.position_embeddings.weight"],
        ),
        (
            emb.segment_embedding.embeddings,
            ["bert.embeddings.token_type_embeddings.weight"],
        ),
    ]
    table = [(var, names, False) for var, names in table]

    def dense(layer, name):
        table.append((layer.kernel, [f"{name}.weight"], True))
        table.append((layer.bias, [f"{name}.bias"], False))

    def norm(layer, name):
        table.append((layer.gamma, [f"{name}.weight"], False))
        table.append((layer.beta, [f"{name}.bias"], False))

    norm(emb.layer_norm, "bert.embeddings.LayerNorm")
    for n, block in enumerate(backbone.encoder_layers):
        p = f"bert.encoder.layer.{n}."
        qkv = [f"{p}attention.self.{part}" for part in ("query", "key", "value")]
        table.append((block.qkv.kernel, [f"{q}.weight" for q in qkv], True))
        table.append((block.qkv.bias, [f"{q}.bias" for q in qkv], False))
        dense(block.attention_output, f"{p}attention.output.dense")
        norm(block.attention_norm, f"{p}attention.output.LayerNorm")
        dense(block.intermediate, f"{p}intermediate.dense")
        dense(block.output_dense, f"{p}output.dense")
        norm(block.output_norm, f"{p}output.LayerNorm")
    if pooler:
        dense(backbone.pooler, "bert.pooler.dense")
    if mlm_head is not None:
        dense(mlm_head.transform, "cls.predictions.transform.dense")
        norm(mlm_head.layer_norm, "cls.predictions.transform.LayerNorm")
        table.append((mlm_head.bias, ["cls.predictions.bias"], False))
    if nsp_head is not None:
        dense(nsp_head, "cls.seq_relationship")
    if task_head is not None:
        dense(*task_head)
    return table


def _to_keras(tensors: dict[str, np.ndarray], names: list[str], transposed: bool):
    parts = [tensors[n].T if transposed else tensors[n] for n in names]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def _from_keras(value: np.ndarray, names: list[str], transposed: bool):
    parts = np.split(value, len(names), axis=-1) if len(names) > 1 else [value]
    return {
        n: np.ascontiguousarray(p.T if transposed else p)
        for n, p in zip(names, parts, strict=True)
    }


# === Reading: Hugging Face ===


def _hf_config(path: str) -> tuple[BertConfig, str]:
    """(BertConfig, architecture) from a Hugging Face config.json."""
    from keras_bert_lite.io import read_json

    raw = read_json(path)
    model_type = raw.get("model_type", "bert")
    architectures = raw.get("architectures") or ["BertModel"]
    known = (*HF_ARCHITECTURES, *HF_TASK_HEADS)
    unknown = [a for a in architectures if a not in known]
    if model_type != "bert" or unknown:
        found = ", ".join(unknown) or f"model_type {model_type!r}"
        raise KblError(
            f"{path}: unknown architecture {found}; kbl import reads BERT "
            f"({', '.join(known)})"
        )
    if raw.get("is_decoder") or raw.get("add_cross_attention"):
        raise KblError(f"{path}: a decoder BERT (is_decoder) is not supported")
    return _bert_config(raw, path), architectures[0]


def _bert_config(raw: dict, path: str) -> BertConfig:
    """BertConfig from the keys Google's bert_config.json and HF's config.json share."""
    act = raw.get("hidden_act", "gelu")
    if act != "gelu":
        raise KblError(
            f"{path}: hidden_act {act!r} is not supported (the encoder uses exact "
            "GELU, BERT's 'gelu')"
        )
    position = raw.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise KblError(
            f"{path}: position_embedding_type {position!r} is not supported "
            "(only 'absolute')"
        )
    keys = {
        "vocab_size": "vocabulary_size",
        "num_hidden_layers": "num_layers",
        "num_attention_heads": "num_heads",
        "hidden_size": "hidden_dim",
        "intermediate_size": "intermediate_dim",
        "max_position_embeddings": "max_sequence_length",
        "type_vocab_size": "num_segments",
    }
    missing = [k for k in keys if k not in raw]
    if missing:
        raise KblError(f"{path}: missing {', '.join(missing)}")
    return BertConfig(
        **{ours: raw[theirs] for theirs, ours in keys.items()},
        dropout=float(raw.get("hidden_dropout_prob", 0.1)),
        # Google's modeling.py uses tf.contrib's layer_norm: epsilon 1e-12.
        layer_norm_epsilon=float(raw.get("layer_norm_eps", 1e-12)),
        initializer_range=float(raw.get("initializer_range", 0.02)),
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError, safe_open

    tensors, bfloat16 = {}, []
    try:
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                try:
                    value = f.get_tensor(name)
                except TypeError:  # numpy has no bfloat16 (without ml_dtypes)
                    bfloat16.append(name)
                    continue
                if value.dtype.name == "bfloat16":  # an ml_dtypes array
                    value = value.astype("float32")
                tensors[name] = value
    except (OSError, SafetensorError) as e:
        raise KblError(f"{path}: cannot read safetensors ({e})") from None
    if bfloat16:
        tensors.update(_read_bfloat16(path, bfloat16))
    return tensors


def _read_bfloat16(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """bfloat16 tensors as float32, read by the safetensors layout: an 8-byte header
    length, a JSON header of dtype/shape/data_offsets, then the data."""
    import ml_dtypes

    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        start = 8 + size
        out = {}
        for name in names:
            entry = header[name]
            if entry["dtype"] != "BF16":
                raise KblError(f"{path}: tensor {name} has dtype {entry['dtype']}")
            begin, end = entry["data_offsets"]
            f.seek(start + begin)
            data = np.frombuffer(f.read(end - begin), dtype=ml_dtypes.bfloat16)
            out[name] = data.astype("float32").reshape(entry["shape"])
    return out


def _read_torch(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise KblError(
            f"{path}: reading pytorch_model.bin needs PyTorch, which is not "
            "installed: pip install 'keras-bert-lite[hf]' (or torch), or give a folder "
            "with model.safetensors"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; name the file
        raise KblError(f"{path}: cannot read PyTorch weights ({e})") from None
    return {
        k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()
    }


def _read_hf_weights(source: str) -> tuple[dict[str, np.ndarray], str]:
    """(raw tensors, file(s) read) from model.safetensors, pytorch_model.bin or their
    sharded forms (an index JSON naming the shards)."""
    from keras_bert_lite.io import read_json

    for name, reader in (
        ("model.safetensors", _read_safetensors),
        ("pytorch_model.bin", _read_torch),
    ):
        path = os.path.join(source, name)
        if os.path.isfile(path):
            return reader(path), path
        index = path + ".index.json"
        if os.path.isfile(index):
            shards = sorted(set(read_json(index).get("weight_map", {}).values()))
            tensors = {}
            for shard in shards:
                tensors.update(reader(os.path.join(source, shard)))
            return tensors, index
    raise KblError(
        f"{source}: no model.safetensors or pytorch_model.bin beside config.json"
    )


def _canonical_hf(raw: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(canonical tensors, canonical name -> name in the file)."""
    prefixed = any(k.startswith("bert.") for k in raw)
    tensors, origin = {}, {}
    for name, value in raw.items():
        new = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
        new = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", new)
        if not prefixed and not new.startswith("cls."):  # saved from a BertModel
            new = "bert." + new
        tensors[new], origin[new] = value, name
    return tensors, origin


# === Reading: Google TF1 ===


def _tf1_name(name: str) -> tuple[str, bool] | None:
    """(canonical name, transposed) for a variable of Google's modeling.py, or None
    for training state (global_step, Adam slots) that the model does not use."""
    if name == "global_step" or re.search(r"adam_[mv]$|Adam(_\d+)?$", name):
        return None
    special = {
        "cls/predictions/output_bias": "cls.predictions.bias",
        "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
        "cls/seq_relationship/output_bias": "cls.seq_relationship.bias",
    }
    if name in special:  # output_weights is stored (2, D): already (out, in)
        return special[name], False
    parts = [re.sub(r"^layer_(\d+)$", r"layer.\1", p) for p in name.split("/")]
    last = {"kernel": "weight", "gamma": "weight", "beta": "bias"}.get(parts[-1])
    if last:
        return ".".join(parts[:-1] + [last]), parts[-1] == "kernel"
    if parts[-1].endswith("_embeddings"):
        return ".".join(parts + ["weight"]), False
    return ".".join(parts), False


def _find_tf1_checkpoint(source: str) -> str:
    preferred = os.path.join(source, "bert_model.ckpt")
    if os.path.isfile(preferred + ".index"):
        return preferred
    indexes = sorted(
        f[: -len(".index")] for f in os.listdir(source) if f.endswith(".index")
    )
    if len(indexes) == 1:
        return os.path.join(source, indexes[0])
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(source)
    if latest:
        return latest
    raise KblError(
        f"{source}: no bert_model.ckpt.index (found {len(indexes)} checkpoints: "
        f"{', '.join(indexes) or 'none'})"
    )


# The heads of Google's run_classifier.py and run_squad.py: their checkpoints'
# backbone imports, their head does not.
_TF1_TASK_HEAD = re.compile(r"^(cls/squad/)?output_(weights|bias)$")


def _read_tf1(prefix: str) -> tuple[dict, dict, list[str]]:
    """(canonical tensors, canonical name -> name in the file, task-head names)."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise KblError(
            f"{prefix}: cannot read the TF checkpoint ({e.message})"
        ) from None
    tensors, origin, task_head = {}, {}, []
    for name in sorted(reader.get_variable_to_shape_map()):
        if _TF1_TASK_HEAD.match(name):
            task_head.append(name)
            continue
        mapped = _tf1_name(name)
        if mapped is None:
            continue
        canonical, transposed = mapped
        value = reader.get_tensor(name)
        tensors[canonical] = value.T if transposed else value
        origin[canonical] = name
    return tensors, origin, task_head


# === Checks and vocabulary ===


def _check_tensors(
    tensors: dict, origin: dict, config: BertConfig, where: str, config_file: str
) -> tuple[bool, bool, bool]:
    """Validates names and shapes; returns (pooler, mlm, nsp): which optional groups
    the checkpoint holds."""
    # The tied MLM output projection: HF stores it in older files; it must be the
    # embedding matrix (an untied one has no place in this model).
    decoder = tensors.pop("cls.predictions.decoder.weight", None)
    word = tensors.get("bert.embeddings.word_embeddings.weight")
    if decoder is not None and word is not None and decoder.shape == word.shape:
        if not np.allclose(decoder, word, atol=1e-6):
            raise KblError(
                f"{where}: cls.predictions.decoder.weight differs from the word "
                "embeddings; untied output projections are not supported"
            )
    decoder_bias = tensors.pop("cls.predictions.decoder.bias", None)
    if decoder_bias is not None:
        tensors.setdefault("cls.predictions.bias", decoder_bias)
    tensors.pop("bert.embeddings.position_ids", None)  # a buffer in older files

    shapes = expected_shapes(config)
    unexpected = sorted(set(tensors) - set(shapes))
    if unexpected:
        names = [origin.get(n, n) for n in unexpected]
        more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
        raise KblError(
            f"{where}: unexpected tensor(s) {', '.join(names[:3])}{more}: not part of "
            f"a BERT of {config.num_layers} layers with MLM and NSP heads"
        )
    groups = {"pooler": _POOLER, "MLM head": _MLM, "NSP head": _NSP}
    present = {}
    for group, names in groups.items():
        found = [n for n in names if n in tensors]
        if found and len(found) < len(names):
            missing = next(n for n in names if n not in tensors)
            raise KblError(f"{where}: {group} is incomplete: no tensor {missing}")
        present[group] = bool(found)
    optional = {n for names in groups.values() for n in names}
    for name in shapes:
        if name not in optional and name not in tensors:
            raise KblError(f"{where}: missing tensor {name}")
    for name, value in tensors.items():
        if tuple(value.shape) != shapes[name]:
            raise KblError(
                f"{where}: tensor {origin.get(name, name)} has shape "
                f"{tuple(value.shape)}, but {config_file} gives {shapes[name]}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise KblError(f"{where}: tensor {origin.get(name, name)} is {value.dtype}")
    if present["NSP head"] and not present["pooler"]:
        raise KblError(f"{where}: an NSP head without the pooler it reads")
    return present["pooler"], present["MLM head"], present["NSP head"]


def _read_vocab(path: str, size: int) -> list[str]:
    """A published vocab.txt: `size` distinct tokens, special ones anywhere."""
    from keras_bert_lite.text.vocabulary import read_vocabulary_lines

    tokens = read_vocabulary_lines(path)
    if len(tokens) != size:
        raise KblError(
            f"{path}: {len(tokens)} tokens, but the model's vocab_size is {size}"
        )
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if token in seen:
            raise KblError(
                f"{path}: line {i + 1}: token {token!r} repeats line {seen[token] + 1}"
            )
        seen[token] = i
    return tokens


def special_order(vocabulary: list[str], where: str = "vocab.txt") -> list[int]:
    """The permutation (new id -> published id) that puts SPECIAL_TOKENS at ids 0-4
    by swapping each with the token at its fixed id; every other token keeps its id."""
    from keras_bert_lite.text.tokenizer import SPECIAL_TOKENS

    order = list(range(len(vocabulary)))
    position = {t: i for i, t in enumerate(vocabulary)}  # published id of a token
    for target, token in enumerate(SPECIAL_TOKENS):
        if token not in position:
            raise KblError(f"{where}: no {token} token")
        current = order.index(position[token])
        order[target], order[current] = order[current], order[target]
    return order


def _casing(source: str, vocabulary: list[str], lowercase: bool | None):
    """(lowercase, why): the tokenizer's casing and where it came from."""
    if lowercase is not None:
        return lowercase, "--cased/--uncased"
    path = os.path.join(source, "tokenizer_config.json")
    if os.path.isfile(path):
        from keras_bert_lite.io import read_json

        value = read_json(path).get("do_lower_case")
        if isinstance(value, bool):
            return value, f"{path}: do_lower_case"
    name = os.path.basename(os.path.abspath(source)).lower()
    if "uncased" in name:
        return True, f"folder name {name!r}"
    if "cased" in name:
        return False, f"folder name {name!r}"
    # An uncased vocabulary cannot hold upper-case tokens (they would never match).
    upper = any(t != t.lower() for t in vocabulary if not t.startswith("["))
    return (not upper), "vocab.txt " + ("has" if upper else "has no") + " upper case"


def _strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _tokenizer_notes(source: str, lowercase: bool, vocabulary: list[str]) -> list[str]:
    """Where this package's tokenizer will not give the published tokenizer's ids."""
    notes = []
    if lowercase:
        # tensorflow-text's uncased normaliser applies NFKC_Casefold (full-width forms
        # to ASCII: ，（１ -> ,(1); BERT's only lower-cases and strips accents. Tokens
        # that differ between the two are never produced here.
        unreachable = [
            t
            for t in vocabulary
            if not t.startswith("[")
            and _strip_accents(unicodedata.normalize("NFKC", t).casefold())
            != _strip_accents(t.lower())
        ]
        if unreachable:
            notes.append(
                f"{len(unreachable)} vocabulary token(s) such as "
                f"{' '.join(unreachable[:5])} hold characters the uncased tokenizer "
                "normalises with NFKC (full-width forms to ASCII); text with them "
                "gets the ids of the normalised tokens"
            )
    path = os.path.join(source, "tokenizer_config.json")
    if not os.path.isfile(path):
        return notes
    from keras_bert_lite.io import read_json

    raw = read_json(path)
    strip = raw.get("strip_accents")
    if strip is not None and bool(strip) != lowercase:
        notes.append(
            f"{path}: strip_accents={strip} with do_lower_case={lowercase}; this "
            "package strips accents exactly when it lower-cases"
        )
    if raw.get("tokenize_chinese_chars") is False:
        notes.append(
            f"{path}: tokenize_chinese_chars=false; this package always splits "
            "CJK characters"
        )
    return notes


# === Import ===


def _is_kbl_run(config_path: str) -> bool:
    """Whether a folder's config.json is a keras-bert-lite run's, not Hugging Face's."""
    from keras_bert_lite.io import read_json

    config = read_json(config_path)
    return isinstance(config, dict) and "kbl_run" in config


def read_checkpoint(source: str) -> dict:
    """Reads a Google or Hugging Face BERT folder into canonical form.

    Returns:
        {"format": "google"|"hf", "config": BertConfig, "architecture": str,
         "tensors": canonical name -> array, "origin": canonical -> file name,
         "weights_file": path, "config_file": path,
         "task_head": the names of a task class's head tensors, left out}
    """
    if not os.path.isdir(source):
        raise KblError(f"{source}: checkpoint folder not found")
    google = os.path.join(source, "bert_config.json")
    hf = os.path.join(source, "config.json")
    if os.path.isfile(hf) and not os.path.isfile(google) and _is_kbl_run(hf):
        raise KblError(
            f"{source}: already a keras-bert-lite run, nothing to import: use it "
            f"as it is (kbl finetune --init {source}, kbl pretrain --init {source})"
        )
    if os.path.isfile(hf) and not os.path.isfile(google):
        config, architecture = _hf_config(hf)
        raw, weights_file = _read_hf_weights(source)
        tensors, origin = _canonical_hf(raw)
        fmt, config_file = "hf", hf
        head = HF_TASK_HEADS.get(architecture)
        dropped = [n for n in tensors if head and n.startswith(head)]
        task_head = sorted(origin.pop(n) for n in dropped)
        for name in dropped:
            del tensors[name]
    elif os.path.isfile(google):
        from keras_bert_lite.io import read_json

        config = _bert_config(read_json(google), google)
        weights_file = _find_tf1_checkpoint(source)
        tensors, origin, task_head = _read_tf1(weights_file)
        fmt, config_file, architecture = "google", google, "BertForPreTraining"
    else:
        raise KblError(
            f"{source}: neither a Google BERT checkpoint (bert_config.json, vocab.txt, "
            "bert_model.ckpt.*) nor a Hugging Face one (config.json, vocab.txt, "
            "model.safetensors or pytorch_model.bin)"
        )
    return {
        "format": fmt,
        "config": config,
        "architecture": architecture,
        "tensors": tensors,
        "origin": origin,
        "weights_file": weights_file,
        "config_file": config_file,
        "task_head": task_head,
    }


def import_checkpoint(
    source: str,
    out: str,
    *,
    lowercase: bool | None = None,
    seq_len: int = 128,
    log: Callable[[str], None] = print,
) -> dict:
    """Converts a published BERT checkpoint into a pretraining run directory.

    Args:
        source: a Google BERT folder (bert_config.json, vocab.txt, bert_model.ckpt.*)
            or a Hugging Face one (config.json, vocab.txt, model.safetensors or
            pytorch_model.bin).
        out: the run directory to write (must not hold a run yet).
        lowercase: the tokenizer's casing; None reads tokenizer_config.json's
            do_lower_case, then the folder name (cased/uncased), then the vocabulary.
        seq_len: the data config's sequence length (for continued pretraining).
        log: where progress lines go.

    Returns:
        A summary: run, format, architecture, heads, casing, moved special tokens.
    """
    from keras_bert_lite import run as run_dir
    from keras_bert_lite.io import atomic_path, write_json
    from keras_bert_lite.models import BertBackbone, BertPretrainer
    from keras_bert_lite.text import BertTokenizer

    if os.path.exists(os.path.join(out, run_dir.CONFIG)):
        raise KblError(f"{out}: already holds a run; choose another --out")
    found = read_checkpoint(source)
    config: BertConfig = found["config"]
    tensors = found["tensors"]
    log(
        f"reading {found['format']} checkpoint {found['weights_file']} "
        f"({config.num_layers} layers, hidden {config.hidden_dim}, "
        f"vocabulary {config.vocabulary_size})"
    )
    pooler, mlm, nsp = _check_tensors(
        tensors,
        found["origin"],
        config,
        found["weights_file"],
        os.path.basename(found["config_file"]),
    )
    vocab_path = os.path.join(source, "vocab.txt")
    published = _read_vocab(vocab_path, config.vocabulary_size)
    order = special_order(published, vocab_path)
    vocabulary = [published[i] for i in order]
    moved = {published[i]: [i, new] for new, i in enumerate(order) if i != new}
    for name in ("bert.embeddings.word_embeddings.weight", "cls.predictions.bias"):
        if name in tensors:
            tensors[name] = tensors[name][order]
    lowercase, why = _casing(source, published, lowercase)
    for note in _tokenizer_notes(source, lowercase, published):
        log(f"note: {note}")

    backbone = BertBackbone.from_bert_config(config, dtype="float32")
    model = BertPretrainer(backbone, nsp=nsp)
    table = weight_table(
        backbone, model.mlm_head if mlm else None, model.nsp_head, pooler=pooler
    )
    for variable, names, transposed in table:
        value = _to_keras(tensors, names, transposed).astype("float32")
        variable.assign(value)
    if not pooler:
        log("note: the checkpoint has no pooler; it starts from random weights")
    if not mlm:
        log("note: the checkpoint has no MLM head; it starts from random weights")
    if found["task_head"]:
        log(
            f"note: the checkpoint's task head ({', '.join(found['task_head'])}) is "
            f"not imported; fine-tune a new one on the backbone: kbl finetune "
            f"--init {out}"
        )

    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, run_dir.WEIGHTS), suffix=".weights.h5") as tmp:
        model.save_weights(tmp)
    BertTokenizer(vocabulary, lowercase).save(out)
    heads = [h for h, present in (("mlm", mlm), ("nsp", nsp)) if present]
    source_info = {
        "format": found["format"],
        "path": os.path.abspath(source),
        "architecture": found["architecture"],
        "heads": heads,
        "pooler": pooler,
        "lowercase_from": why,
        # token -> [published id, id here]: the special tokens and those they swapped
        # places with (see the module docstring).
        "moved_tokens": moved,
    }
    write_json(
        os.path.join(out, run_dir.CONFIG),
        {
            "kbl_run": CONFIG_VERSION,
            "task": "pretraining",
            "model": config.to_dict(),
            "data": DataConfig(
                seq_len=max(8, min(seq_len, config.max_sequence_length)),
                nsp=nsp,
                lowercase=lowercase,
            ).to_dict(),
            "train": TrainConfig().to_dict(),
            "corpus": [],
            "imported_from": source_info,
        },
    )
    log(
        f"wrote {out}: {found['architecture']} with "
        f"{' and '.join(h.upper() for h in heads) or 'no'} head(s), "
        f"{'uncased' if lowercase else 'cased'} tokenizer ({why})"
        + (
            f"; special tokens moved to ids 0-4: {len(moved)} ids swapped"
            if moved
            else ""
        )
    )
    return {"run": out, **source_info, "lowercase": lowercase}


# === Export ===


def hf_config(config: BertConfig, architecture: str) -> dict:
    """A Hugging Face config.json for a model of this config."""
    return {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocabulary_size,
        "hidden_size": config.hidden_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": config.dropout,
        # This encoder has no dropout on attention probabilities; BERT's default.
        "attention_probs_dropout_prob": config.dropout,
        "max_position_embeddings": config.max_sequence_length,
        "type_vocab_size": config.num_segments,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": config.layer_norm_epsilon,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def _task_head(run: str, config: dict, model, log: Callable[[str], None]):
    """(architecture, (output layer, tensor name) or None, config.json entries) of a
    fine-tuned run in Hugging Face's classes."""
    from keras_bert_lite.data import tasks

    task, options = config["task"], config.get("task_options") or {}
    if task == "qa":  # the span layer; the run also puts -1e9 at padding
        return "BertForQuestionAnswering", (model.span_dense, "qa_outputs"), {}
    without = {
        "classify": options.get("pooling", "cls") != "cls" and "mean pooling",
        "tag": options.get("crf") and "a CRF",
    }[task]
    if without:
        log(
            f"  {without}: no Hugging Face class computes it, so the backbone is "
            "written alone, as BertModel (kbl export's other formats keep the head)"
        )
        return "BertModel", None, {}
    kind = options.get("label_kind", "single")
    if kind == "regression":
        labels = ["value"]
    else:
        labels = tasks.read_labels(os.path.join(run, "labels.txt"))
    head_config = {
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "classifier_dropout": options.get("dropout", 0.1),
    }
    head = (model.output_dense, "classifier")
    if task == "tag":
        return "BertForTokenClassification", head, head_config
    head_config["problem_type"] = {
        "single": "single_label_classification",
        "multi_label": "multi_label_classification",
        "regression": "regression",
    }[kind]
    return "BertForSequenceClassification", head, head_config


def export_hf(run: str, out: str, log: Callable[[str], None] = print) -> dict:
    """Writes a run directory as a Hugging Face BERT folder.

    A pretraining run becomes `BertForPreTraining` (with NSP) or `BertForMaskedLM`
    (without). A fine-tuned run keeps its head: `BertForSequenceClassification`
    (single-label, multi-label or regression, labels in `id2label`),
    `BertForTokenClassification` or `BertForQuestionAnswering`. Heads that no
    Hugging Face class computes (a classifier on the mean of the token outputs, a
    tagger's CRF) give the backbone alone, as `BertModel`, and say so.

    Args:
        run: the run directory.
        out: the folder to write: config.json, vocab.txt, tokenizer_config.json,
            special_tokens_map.json, model.safetensors.

    Returns:
        {"out", "architecture", "tensors", "files"}.
    """
    from safetensors.numpy import save_file

    from keras_bert_lite import run as run_dir
    from keras_bert_lite.io import atomic_path, write_json, write_text

    config = run_dir.read_config(run)
    model = run_dir.load(run)
    tokenizer = run_dir.load_tokenizer(run)
    backbone = model.backbone
    mlm = nsp = None
    head, head_config = None, {}
    if config.get("task") == "pretraining":
        mlm, nsp = model.mlm_head, model.nsp_head
        architecture = "BertForPreTraining" if nsp is not None else "BertForMaskedLM"
    else:
        architecture, head, head_config = _task_head(run, config, model, log)
    # The masked-LM, token-classification and QA classes have no pooler: writing
    # one would be an unused weight.
    with_pooler = ("BertModel", "BertForPreTraining", "BertForSequenceClassification")
    pooler = architecture in with_pooler
    tensors = {}
    for variable, names, transposed in weight_table(backbone, mlm, nsp, pooler, head):
        value = np.asarray(variable.numpy(), dtype="float32")
        tensors.update(_from_keras(value, names, transposed))
    if architecture == "BertModel":  # what BertModel.save_pretrained writes
        tensors = {k.removeprefix("bert."): v for k, v in tensors.items()}

    bert_config = backbone.bert_config()
    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, "model.safetensors")) as tmp:
        save_file(tensors, tmp, metadata={"format": "pt"})
    write_text(os.path.join(out, "vocab.txt"), "\n".join(tokenizer.vocabulary) + "\n")
    specials = {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }
    write_json(os.path.join(out, "special_tokens_map.json"), specials)
    write_json(
        os.path.join(out, "tokenizer_config.json"),
        {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": tokenizer.lowercase,
            "strip_accents": None,
            "tokenize_chinese_chars": True,
            "model_max_length": bert_config.max_sequence_length,
            **specials,
        },
    )
    write_json(
        os.path.join(out, "config.json"),
        {**hf_config(bert_config, architecture), **head_config},
    )
    files = [
        "config.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "model.safetensors",
    ]
    log(f"wrote {out}: {architecture}, {len(tensors)} tensors")
    return {
        "out": out,
        "architecture": architecture,
        "tensors": len(tensors),
        "files": files,
    }
