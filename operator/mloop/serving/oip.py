"""Open Inference Protocol v2 over REST: tensors in JSON, and the binary tensor extension tritonclient sends by default.

Binary extension: the body is a JSON header of `Inference-Header-Content-Length` bytes followed by the raw
tensors, in input order, each announced by `parameters.binary_data_size`. BYTES elements are a 4-byte
little-endian length and the bytes; other types are little-endian fixed-width values.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from mloop.serving.validate import BadRequest

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
DATATYPES = {*DTYPES, "BYTES"}
EXTENSIONS = ("binary_tensor_data",)
STATISTICS = "the statistics extension is not supported; the server's Prometheus metrics are at /metrics"
CONFIG = "model configuration is not supported; GET /v2/models/<model> gives the model's metadata"
TRACE = "the trace extension is not supported"
SHARED_MEMORY = "shared-memory tensors are not supported; send the data in the body (JSON or binary)"
UNSUPPORTED_ROUTES = (  # what tritonclient can ask beyond OIP v2 and the binary extension: refused with a reason
    ("/v2/models/stats", STATISTICS),
    ("/v2/models/{model}/stats", STATISTICS),
    ("/v2/models/{model}/versions/{version}/stats", STATISTICS),
    ("/v2/models/{model}/config", CONFIG),
    ("/v2/models/{model}/versions/{version}/config", CONFIG),
    ("/v2/repository/{tail:.*}", "the model repository extension is not supported: this server serves one package, "
                                 "and the operator rolls it"),
    ("/v2/trace/setting", TRACE),
    ("/v2/models/{model}/trace/setting", TRACE),
    ("/v2/logging", "the logging extension is not supported"),
    ("/v2/systemsharedmemory/{tail:.*}", SHARED_MEMORY),
    ("/v2/cudasharedmemory/{tail:.*}", SHARED_MEMORY),
)
UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "shared-memory tensors are not supported; send the data in the body (JSON or binary)",
    "classification": "the classification extension is not supported; request 'predict' or 'predict_proba'",
}


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """(JSON header, binary tail); the tail is empty for a plain JSON request."""
    if header_length is None:
        head, tail = body, memoryview(b"")
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not a number") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {n} does not fit a body of {len(body)} bytes")
        head, tail = body[:n], memoryview(body)[n:]
    try:
        return orjson.loads(head), tail
    except orjson.JSONDecodeError:
        raise BadRequest("the body is not valid JSON" if header_length is None
                         else "the JSON header of the binary request is not valid JSON") from None


def _bytes_elements(raw: memoryview, name: str) -> list[str]:
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES element", name)
        (n,) = struct.unpack_from("<I", raw, i)
        if i + 4 + n > len(raw):
            raise BadRequest(f"input {name!r}: truncated BYTES element", name)
        out.append(bytes(raw[i + 4:i + 4 + n]).decode("utf-8", errors="replace"))
        i += 4 + n
    return out


def columns_from_v2(inputs: Any, tail: memoryview, expected: list[str]) -> dict[str, Any]:
    """OIP v2 tensors -> {column: values}: one tensor per column, or one [rows, features] tensor in signature order."""
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    columns: dict[str, Any] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict) or "name" not in tensor or "shape" not in tensor:
            raise BadRequest("each input tensor needs name, shape, datatype and data")
        name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor["shape"]
        if datatype not in DATATYPES:
            raise BadRequest(f"input {name!r}: unknown datatype {datatype!r}", name)
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise BadRequest(f"input {name!r}: shape must be a list of sizes", name)
        parameters = tensor.get("parameters") or {}
        for key in parameters:
            if key in UNSUPPORTED_PARAMETERS:
                raise BadRequest(f"input {name!r}: {UNSUPPORTED_PARAMETERS[key]}", name)
        size = 1
        for d in shape:
            size *= d
        if "binary_data_size" in parameters:
            n = parameters["binary_data_size"]
            if not isinstance(n, int) or n < 0 or offset + n > len(tail):
                raise BadRequest(f"input {name!r}: binary_data_size {n} overruns the binary part of the body", name)
            raw = tail[offset:offset + n]
            offset += n
            if datatype == "BYTES":
                data: Any = _bytes_elements(raw, name)
            else:
                if n % np.dtype(DTYPES[datatype]).itemsize:
                    raise BadRequest(f"input {name!r}: {n} bytes is not a whole number of {datatype}", name)
                data = np.frombuffer(raw, dtype=np.dtype(DTYPES[datatype]).newbyteorder("<"))
            count = len(data)
        elif "data" in tensor:
            data = tensor["data"]
            if not isinstance(data, list):
                raise BadRequest(f"input {name!r}: data must be a list", name)
            count = np.asarray(data, dtype=object).size if data and isinstance(data[0], list) else len(data)
        else:
            raise BadRequest(f"input {name!r}: no data and no binary_data_size", name)
        if count != size:
            raise BadRequest(f"input {name!r}: shape {shape} does not match {count} values", name)
        if name in expected:
            columns[name] = data
        elif len(inputs) == 1 and len(shape) == 2 and shape[1] == len(expected):
            matrix = np.asarray(data, dtype=object if datatype == "BYTES" else None).reshape(shape)
            for j, column in enumerate(expected):
                columns[column] = matrix[:, j]
        else:
            raise BadRequest(f"unknown input {name!r}; expected one tensor per column {expected} "
                             f"or one [rows, {len(expected)}] tensor", name)
    if offset != len(tail):
        raise BadRequest(f"{len(tail) - offset} bytes after the last binary tensor belong to no input")
    return columns


def encode_bytes(values: list[str]) -> bytes:
    parts = []
    for v in values:
        b = v.encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def response(head: dict[str, Any], outputs: list[dict[str, Any]], binary: set[str]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None): outputs named in `binary` travel as raw bytes after the JSON."""
    tails = []
    for out in outputs:
        if out["name"] in binary:
            data = out.pop("data")
            raw = encode_bytes(data) if out["datatype"] == "BYTES" else np.asarray(data, dtype="<f8").tobytes()
            out["parameters"] = {"binary_data_size": len(raw)}
            tails.append(raw)
    body = orjson.dumps({**head, "outputs": outputs}, option=orjson.OPT_SERIALIZE_NUMPY)
    if not tails:
        return body, None
    return body + b"".join(tails), len(body)
