"""How a model leaves: SavedModel (TF Serving), TFLite/LiteRT and ONNX, and `verify`.

    import keras_bert_lite as kbl
    kbl.export.export_all("runs/sentiment", "exports/sentiment")
    kbl.export.verify("exports/sentiment")

`import keras_bert_lite.export` stays light: TensorFlow, tf2onnx, onnxruntime and
LiteRT load when a function first needs them.
"""

import importlib

_LAZY = {
    "saved_model": ("keras_bert_lite.export.to_saved_model", "saved_model"),
    "tflite": ("keras_bert_lite.export.to_tflite", "tflite"),
    "onnx": ("keras_bert_lite.export.to_onnx", "onnx"),
    "verify": ("keras_bert_lite.export.verification", "verify"),
    "export_all": ("keras_bert_lite.export.bundle", "export_all"),
    "load_source": ("keras_bert_lite.export.source", "load_source"),
    "ExportSource": ("keras_bert_lite.export.source", "ExportSource"),
    "QUANTIZE": ("keras_bert_lite.export.to_tflite", "QUANTIZE"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'keras_bert_lite.export' has no attribute '{name}'")
