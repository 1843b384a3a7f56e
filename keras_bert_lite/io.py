"""Small file helpers: every file a run writes goes to a temporary name first and is
renamed into place, so a crash never leaves a half-written file where a good one was."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from keras_bert_lite.errors import KblError


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    `suffix` keeps an extension some writers insist on (Keras wants `.weights.h5`).
    """
    require_file_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=directory
    )
    os.close(fd)
    # mkstemp makes the file private (0600), and the rename keeps that; the file in
    # place gets what open() would have given it (0666 less the umask), so that a
    # model server, TensorBoard or a teammate running as another user can read it.
    os.chmod(tmp, permitted(0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # h5py raises either on a full disk
        if not disk_full(e):
            raise
        raise KblError(
            f"{path}: no space left on the device while writing it; the previous "
            "file (if any) is untouched; free some space and run the command again"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def require_file_path(path: str, option: str = "") -> None:
    """Raises KblError when the file to write, `path`, is an existing directory
    (`option`: the command-line option that named it, for the message). Commands
    check their output files before the work, not after it."""
    if os.path.isdir(path):
        raise KblError(
            f"{path}: is a directory; {option or 'the path'} must name a file to "
            "write (a new file inside it, for instance)"
        )


def permitted(mode: int) -> int:
    """`mode` less the process's umask (0o666 for a file, 0o777 for a folder)."""
    umask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(umask)
    return mode & ~umask


def disk_full(error: BaseException) -> bool:
    """Whether an error means the disk (or quota) is full. h5py reports HDF5's
    write failures as OSError without errno, the reason only in the message."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "errno = 28" in str(error)


def remove_temporaries(directory: str) -> list[str]:
    """Deletes the `.tmp-*` files an interrupted write left in `directory`."""
    removed = []
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            full = os.path.join(directory, name)
            if name.startswith(".tmp-") and os.path.isfile(full):
                os.remove(full)
                removed.append(full)
    return removed


def write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def write_json(path: str, value: Any) -> None:
    write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def open_binary(path: str) -> BinaryIO:
    """`path` opened for reading bytes, `.gz` decompressed; a missing or unreadable
    file is an error naming it. (Errors while reading are the caller's to name.)"""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        return opener(path, "rb")
    except FileNotFoundError:
        raise KblError(f"{path}: file not found") from None
    except OSError as e:
        raise KblError(f"{path}: cannot read ({e})") from None


def read_json(path: str) -> Any:
    """A JSON file's value; `.gz` is read transparently and a byte-order mark skipped.

    A missing or unreadable file, bad UTF-8 or bad JSON is an error naming the file
    (and the line).
    """
    try:
        with open_binary(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise KblError(f"{path}: cannot read ({e})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        message = f"{path}:{line}: not valid UTF-8; save the file as UTF-8"
        raise KblError(message) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KblError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def json_lines(
    path: str, lines: Iterable[tuple[int, str]], example: str
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file.

    `lines` are the file's (number, text) pairs; a line that is not a JSON object is
    an error naming the file and line, with `example` showing what one should hold.
    """
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise KblError(
                f"{path}:{number}: not valid JSON ({e.msg}); each line must be "
                f"an object like {example}"
            ) from None
        if not isinstance(record, dict):
            raise KblError(
                f"{path}:{number}: expected a JSON object like {example}, found "
                f"{type(record).__name__}"
            )
        yield number, record
