"""Cache entries as bytes: packed float32 vectors and JSON completions, framed and checksummed.

    magic (4) | key tag (8) | meta (u32) | payload length (u32) | crc32 of payload (u32) | payload

The key tag (the first 8 bytes of the key's digest) ties an entry to its key, so a value written under
the wrong key is refused like a corrupted one: a cache may miss, never answer wrongly.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Sequence

import msgspec

from citadel_proxy.pipeline.types import Completion

_HEADER = struct.Struct("<4s8sIII")
VECTOR_MAGIC = b"CEv1"
COMPLETION_MAGIC = b"CRv1"
_BIG_ENDIAN = sys.byteorder == "big"
# JSON, not msgpack: tool-call arguments are msgspec.Raw JSON, which msgpack would splice in as msgpack.
_completion_encoder = msgspec.json.Encoder()
_completion_decoder = msgspec.json.Decoder(Completion)


class Vector(msgspec.Struct, frozen=True):
    """One embedding as little-endian float32 bytes (OpenAI's base64 payload as is), and its tokens."""

    packed: bytes
    tokens: int = 0

    def floats(self) -> list[float]:
        values = array("f")
        values.frombytes(self.packed)
        if _BIG_ENDIAN:
            values.byteswap()
        return values.tolist()


def pack(floats: Sequence[float]) -> bytes:
    """float32, little-endian. Ollama computes in float32, so nothing real is lost."""
    values = array("f", floats)
    if _BIG_ENDIAN:
        values.byteswap()
    return values.tobytes()


def frame(magic: bytes, tag: bytes, meta: int, payload: bytes) -> bytes:
    return _HEADER.pack(magic, tag, meta, len(payload), zlib.crc32(payload)) + payload


def unframe(magic: bytes, tag: bytes, raw: bytes) -> tuple[int, bytes] | None:
    """(meta, payload), or None when the entry is not a whole, intact entry of this kind for this key."""
    if len(raw) < _HEADER.size:
        return None
    found_magic, found_tag, meta, length, crc = _HEADER.unpack_from(raw)
    payload = raw[_HEADER.size :]
    if found_magic != magic or found_tag != tag or len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return meta, payload


def encode_vector(tag: bytes, vector: Vector) -> bytes:
    return frame(VECTOR_MAGIC, tag, vector.tokens, vector.packed)


def decode_vector(tag: bytes, raw: bytes) -> Vector | None:
    found = unframe(VECTOR_MAGIC, tag, raw)
    if found is None or not found[1] or len(found[1]) % 4:
        return None
    return Vector(found[1], found[0])


def encode_completion(tag: bytes, completion: Completion) -> bytes:
    return frame(COMPLETION_MAGIC, tag, 0, _completion_encoder.encode(completion))


def decode_completion(tag: bytes, raw: bytes) -> Completion | None:
    found = unframe(COMPLETION_MAGIC, tag, raw)
    if found is None:
        return None
    try:
        return _completion_decoder.decode(found[1])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
