"""keras-bert-lite: train your own BERT with model.fit and ship it.

    import keras_bert_lite as kbl
    backbone = kbl.BertBackbone.from_preset("mini", vocabulary_size=30522)
    kbl.training.pretrain(["corpus.txt"], "runs/mini", steps=1000)
    model = kbl.load("runs/mini"); tokenizer = kbl.load_tokenizer("runs/mini")

`import keras_bert_lite` is light: TensorFlow and Keras load on first use.
"""

import importlib
import os

__version__ = "0.1.0"

# In a source checkout (not installed), training/ and export/ sit beside this package;
# an install maps them to keras_bert_lite.training and keras_bert_lite.export.
_here = os.path.dirname(os.path.abspath(__file__))
_root = os.path.dirname(_here)
if not os.path.isdir(os.path.join(_here, "training")) and os.path.isfile(
    os.path.join(_root, "training", "__init__.py")
):
    __path__.append(_root)  # noqa: F821 - the package's own __path__

_LAZY = {
    "BertBackbone": ("keras_bert_lite.models", "BertBackbone"),
    "BertPretrainer": ("keras_bert_lite.models", "BertPretrainer"),
    "BertTokenizer": ("keras_bert_lite.text", "BertTokenizer"),
    "BertConfig": ("keras_bert_lite.config", "BertConfig"),
    "DataConfig": ("keras_bert_lite.config", "DataConfig"),
    "TrainConfig": ("keras_bert_lite.config", "TrainConfig"),
    "PRESETS": ("keras_bert_lite.config", "PRESETS"),
    "KblError": ("keras_bert_lite.errors", "KblError"),
    "load": ("keras_bert_lite.run", "load"),
    "load_tokenizer": ("keras_bert_lite.run", "load_tokenizer"),
}
_SUBMODULES = ("config", "data", "export", "layers", "models", "text", "training")

__all__ = sorted(list(_LAZY) + list(_SUBMODULES))


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'keras_bert_lite' has no attribute '{name}'")
