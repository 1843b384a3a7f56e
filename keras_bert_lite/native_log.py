"""What C++ libraries print to file descriptor 2, kept to the lines worth reading.

TensorFlow, the TFLite converter and LiteRT write some notices straight to the
process's stderr, past Python and past `TF_CPP_MIN_LOG_LEVEL` ("INFO: Created
TensorFlow Lite XNNPACK delegate for CPU.", the quantizer's "fully_quantize: 0,
inference_type: 6, ..."). Around the calls that print them, `native_stderr` sends
descriptor 2 to a temporary file and writes back every line but the known notices,
so a warning or an error message that matters still reaches the terminal, in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Notices that say nothing the user acts on: each names the library that prints it.
ROUTINE = re.compile(
    "|".join(
        (
            # LiteRT, on building an interpreter (the default CPU delegate).
            r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
            # The TFLite converter's MLIR quantizer, once per quantized conversion.
            r"fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
            r"output_inference_type: \w+",
        )
    )
)
EVERYTHING = re.compile(".*", re.DOTALL)


@contextlib.contextmanager
def native_stderr(drop: re.Pattern = ROUTINE) -> Iterator[None]:
    """Runs the block with descriptor 2 going to a temporary file, then writes back
    to stderr every line that `drop` does not match in full (also when the block
    raises). `EVERYTHING` drops it all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").splitlines(keepends=True)
            kept = [line for line in lines if not drop.fullmatch(line.rstrip("\r\n"))]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
