"""Read back what an offline W&B run recorded (its ``run-<id>.wandb`` transaction log), without the network.

The file is a LevelDB-style log: a 7-byte file header (``:W&B``, magic, version), then 32 KiB blocks of chunks,
each ``crc32 (4) | length (2) | type (1) | data``; a protobuf ``Record`` is split over FIRST/MIDDLE/LAST chunks
when it crosses a block. Newer wandb releases dropped their Python reader, so the tests carry this small one.
"""
from __future__ import annotations

import glob
import json
import os
import struct
import time
from typing import Any, Iterator

_FILE_HEADER = struct.Struct("<4sHB")
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        data = f.read()
    ident, _magic, _version = _FILE_HEADER.unpack_from(data, 0)
    assert ident == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = _FILE_HEADER.size, b""
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        pos += _CHUNK_HEADER.size
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""
        else:  # zero padding at the end of a partly written block
            break


def read_offline_run(save_dir: str, timeout: float = 30.0) -> dict[str, Any]:
    """``{"history": [row, ...], "config": {...}, "artifacts": [(name, type, aliases, metadata), ...]}`` of the
    one offline run under ``save_dir/wandb``; keys starting with ``_`` (wandb's own) are left out.

    wandb's service process may still be writing the log when ``run.finish()`` returns: the file is read once its
    ``exit`` record is there (waiting up to ``timeout`` seconds)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = glob.glob(os.path.join(save_dir, "wandb", "offline-run-*", "run-*.wandb"))
    assert len(files) == 1, f"expected one offline run under {save_dir}, found {files}"
    deadline = time.monotonic() + timeout
    while True:
        records = []
        for raw in _records(files[0]):
            record = pb.Record()
            record.ParseFromString(raw)
            records.append(record)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        assert time.monotonic() < deadline, f"{files[0]} has no exit record after {timeout}s: the run did not finish"
        time.sleep(0.2)

    out: dict[str, Any] = {"history": [], "config": {}, "artifacts": []}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            out["history"].append({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "config":
            for item in record.config.update:
                if not item.key.startswith("_"):
                    out["config"][item.key] = json.loads(item.value_json)
        elif kind == "artifact":
            art = record.artifact
            out["artifacts"].append((art.name, art.type, sorted(art.aliases), json.loads(art.metadata or "{}")))
    return out
