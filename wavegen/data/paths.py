"""Paths that may be local or remote (gs://, s3://...): one test of which is which.

Local paths (no scheme, or file://) go to the operating system; anything else to
TensorFlow's `tf.io.gfile` (the filesystem layer TFDS reads datasets through), imported only
when a remote path is used. The pipeline (`beam_pipelines`) uses Beam's FileSystems for its
own remote paths; wavegen never imports Beam.
"""

from __future__ import annotations

import os
from typing import TextIO

FILE_SCHEME = "file://"


def is_local(path: str) -> bool:
    """Whether `path` names the local filesystem: no URL scheme, or file://."""
    return "://" not in path or path.startswith(FILE_SCHEME)


def local_path(path: str) -> str:
    """A local path as the operating system wants it (file:// removed)."""
    return path[len(FILE_SCHEME):] if path.startswith(FILE_SCHEME) else path


def exists(path: str) -> bool:
    if is_local(path):
        return os.path.exists(local_path(path))
    import tensorflow as tf

    return tf.io.gfile.exists(path)


def open_text(path: str) -> TextIO:
    """Opens a local or remote UTF-8 text file for reading."""
    if is_local(path):
        return open(local_path(path), encoding="utf-8")
    import tensorflow as tf

    return tf.io.gfile.GFile(path, "r")
