"""C++ libraries' notices on descriptor 2: routine ones dropped, the rest kept."""

import os

import pytest

from keras_bert_lite.native_log import EVERYTHING, native_stderr

XNNPACK = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
QUANTIZER = (
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    "output_inference_type: FLOAT32\n"
)


def test_routine_notices_go_and_everything_else_stays_in_order(capfd):
    with native_stderr():
        os.write(2, XNNPACK.encode())
        os.write(2, b"W0000 something worth reading\n")
        os.write(2, QUANTIZER.encode())
        os.write(2, b"a last line without its newline")
    out, err = capfd.readouterr()
    assert err == "W0000 something worth reading\na last line without its newline"
    assert out == ""


def test_a_notice_inside_a_longer_line_is_kept(capfd):
    with native_stderr():
        os.write(2, b"ERROR: " + XNNPACK.encode())
    assert capfd.readouterr().err == "ERROR: " + XNNPACK


def test_what_was_printed_before_an_error_reaches_the_terminal(capfd):
    with pytest.raises(RuntimeError, match="conversion failed"), native_stderr():
        os.write(2, XNNPACK.encode() + b"error: 'tf.Foo' op is neither a custom op\n")
        raise RuntimeError("conversion failed")
    assert capfd.readouterr().err == "error: 'tf.Foo' op is neither a custom op\n"
    # Descriptor 2 is the terminal's again.
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_everything_drops_it_all(capfd):
    with native_stderr(EVERYTHING):
        os.write(2, b"E0000 cuInit failed\nW0000 and more\n")
    assert capfd.readouterr().err == ""
