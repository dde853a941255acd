"""TFRecord framing, written through Beam's FileSystems (local, gs://, s3://...).

Each record is: length (uint64 LE), masked CRC32C of the length, data, masked CRC32C of
the data. The format TensorFlow, TFDS and Beam's tfrecordio read.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c

_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = struct.pack("<Q", len(record))
    return b"".join((length, struct.pack("<I", masked_crc(length)), record,
                     struct.pack("<I", masked_crc(record))))


def write_records(path: str, records: Iterable[bytes]) -> tuple[int, int]:
    """Writes records to `path` (any Beam filesystem); returns (records, bytes written)."""
    from apache_beam.io.filesystems import FileSystems

    n = size = 0
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type="uncompressed") as f:
        for record in records:
            data = frame(record)
            f.write(data)
            n += 1
            size += len(data)
    return n, size
