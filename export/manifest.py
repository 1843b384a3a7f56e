"""`export.json`: what an export directory holds, and atomic directory writes.

    OUT/export.json   {"kbl_export": 1, "run", "task", "labels", "seq_len", ...,
                       "formats": [{"name", "format", "path", "inputs", "bytes", ...}],
                       "files": {relative path: bytes}}

Every exporter records the artefact it wrote here, so `verify` and serving code find
the run, the labels and the files without guessing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from keras_bert_lite.errors import KblError
from keras_bert_lite.export.source import EXPORT_JSON, EXPORT_VERSION, ExportSource
from keras_bert_lite.io import permitted, read_json, write_json


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yields a temporary directory beside `path`; on success it replaces `path`.

    The temporary name starts with a dot and is not a number, so TF Serving, which
    watches NAME/ for numeric version folders, never sees a half-written model.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    old = None
    try:
        yield tmp
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(path)}-", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover and os.path.exists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)


def target(out: str, extension: str, default_name: str) -> tuple[str, str]:
    """(file path, export directory) for `out`: a file ending in `extension`, or a
    directory that gets `default_name` inside it."""
    if out.endswith(extension):
        return out, os.path.dirname(out) or "."
    return os.path.join(out, default_name), out


def size_of(path: str) -> int:
    """Bytes in a file, or in all files under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def make_readable(path: str) -> None:
    """Gives a file, or a directory tree, the permissions the umask allows.

    Temporary files and folders are created private (0600/0700); a model server
    running as another user (TF Serving in a container) must still read them.
    """
    targets = [path]
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            targets += [os.path.join(root, n) for n in dirs + files]
    folder, file = permitted(0o777), permitted(0o666)  # the umask, read once
    for target in targets:
        os.chmod(target, folder if os.path.isdir(target) else file)


def read_manifest(directory: str) -> dict[str, Any]:
    """The export.json of an export directory (KblError naming it when absent)."""
    path = os.path.join(directory, EXPORT_JSON)
    if not os.path.isdir(directory):
        raise KblError(f"{directory}: export directory not found")
    if not os.path.exists(path):
        raise KblError(
            f"{path}: not found; write the export with `kbl export --model RUN "
            f"--out {directory}`"
        )
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("kbl_export") != EXPORT_VERSION:
        raise KblError(
            f"{path}: not a keras-bert-lite export manifest of version "
            f"{EXPORT_VERSION}; export the run again"
        )
    formats = manifest.get("formats")
    if not isinstance(formats, list) or not all(isinstance(f, dict) for f in formats):
        raise KblError(f"{path}: 'formats' must be a list of objects")
    for entry in formats:
        inside(directory, entry.get("path"), f"{path}: formats[].path")
    for name in manifest.get("files") or {}:
        inside(directory, name, f"{path}: files")
    return manifest


def inside(directory: str, name: Any, where: str) -> str:
    """`directory`/`name`, refusing a name that is not a relative path staying
    inside `directory` (an export never points at files elsewhere)."""
    if not isinstance(name, str) or not name or os.path.isabs(name):
        raise KblError(f"{where}: {name!r} is not a relative path inside the export")
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, full]) != root:
        raise KblError(f"{where}: {name!r} points outside {directory}; refusing it")
    return full


def record(directory: str, source: ExportSource, artefact: dict[str, Any]) -> dict:
    """Adds (or replaces, by name) one artefact in `directory`/export.json.

    `artefact["path"]` is relative to `directory`. A manifest left by an export of
    another run is started afresh: one directory describes one run.
    """
    path = os.path.join(directory, EXPORT_JSON)
    manifest: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            manifest = read_manifest(directory)
        except KblError:
            manifest = {}
        if manifest.get("run") != source.run:
            manifest = {}
    formats = {f["name"]: f for f in manifest.get("formats", [])}
    location = os.path.join(directory, artefact["path"])
    formats[artefact["name"]] = {**artefact, "bytes": size_of(location)}
    files: dict[str, int] = {}
    for entry in formats.values():
        where = os.path.join(directory, entry["path"])
        if os.path.isfile(where):
            files[entry["path"]] = os.path.getsize(where)
        else:
            for root, _, names in os.walk(where):
                for name in names:
                    full = os.path.join(root, name)
                    files[os.path.relpath(full, directory)] = os.path.getsize(full)
    manifest = {
        "kbl_export": EXPORT_VERSION,
        **source.describe(),
        "formats": sorted(formats.values(), key=lambda f: f["name"]),
        "files": dict(sorted(files.items())),
    }
    write_json(path, manifest)
    make_readable(location)
    make_readable(path)
    return manifest
