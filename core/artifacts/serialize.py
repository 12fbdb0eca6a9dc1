"""Deterministic safetensors serialisation.

The safetensors library writes its metadata in hash-map order, which changes from process to
process, so the same tensors could give different bytes. This writer emits the same format
(8-byte little-endian header length, a JSON header padded with spaces to a multiple of 8, then the
raw little-endian tensor data) with sorted keys, so identical runs give byte-identical files. Files
are read back with the safetensors library.
"""

from __future__ import annotations

import json
import struct

import torch
from torch import Tensor

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


def dumps(tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes of ``tensors`` (moved to the CPU) with string ``metadata``."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    chunks, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":"), sort_keys=False).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)
