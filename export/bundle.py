"""`export_all`: every format of a run into one directory, described by export.json.

OUT/saved_model/1/           TF Serving (raw text + ids signatures, warm-up)
OUT/model.tflite             raw text -> outputs, float32
OUT/model.QUANT.tflite       the same, quantized (float16, dynamic, int8)
OUT/model_ids.tflite         ids -> outputs, float32
OUT/model.onnx               ids -> outputs
OUT/export.json              run, task, labels, seq_len, formats, files
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from keras_bert_lite.errors import KblError
from keras_bert_lite.export.manifest import read_manifest
from keras_bert_lite.export.source import ExportSource, as_source
from keras_bert_lite.export.to_onnx import onnx
from keras_bert_lite.export.to_saved_model import saved_model
from keras_bert_lite.export.to_tflite import QUANTIZE, tflite


def quantizations(quantize: str | Sequence[str]) -> list[str]:
    """ "all" -> every mode; a name or a list -> those (float32 always first)."""
    if isinstance(quantize, str):
        quantize = list(QUANTIZE) if quantize == "all" else [quantize]
    unknown = [q for q in quantize if q not in QUANTIZE]
    if unknown:
        raise KblError(
            f"unknown quantization {unknown[0]!r}: choose from "
            f"{', '.join(QUANTIZE)} or all"
        )
    return ["none"] + [q for q in QUANTIZE if q in quantize and q != "none"]


def export_all(
    run: str | ExportSource,
    out: str,
    quantize: str | Sequence[str] = "all",
    representative=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Writes a fine-tuned run in every format (see the module docstring).

    Args:
        run: the run directory (or an `ExportSource` already read).
        out: the export directory.
        quantize: the raw-text TFLite variants besides float32: "all", one of
            "none", "float16", "dynamic", "int8", or a list of them.
        representative: int8 calibration data (see `tflite`).
        log: where progress lines go.

    Returns:
        The export.json written.
    """
    source = as_source(run)
    modes = quantizations(quantize)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("SavedModel", lambda: saved_model(source, out)),
        ("SavedModel ids-only", lambda: saved_model(source, out, ids_only=True)),
    ]
    for mode in modes:
        steps.append(
            (
                f"TFLite ({'float32' if mode == 'none' else mode})",
                lambda mode=mode: tflite(source, out, mode, representative),
            )
        )
    steps.append(("TFLite ids-only", lambda: tflite(source, out, ids_only=True)))
    steps.append(("ONNX", lambda: onnx(source, out)))
    for what, step in steps:
        started = time.time()
        log(f"exporting {what} ...")
        path = step()
        log(f"  wrote {path} ({time.time() - started:.0f}s)")
    return read_manifest(out)
