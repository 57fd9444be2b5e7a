"""tiktoken's ``o200k_base``, offline (bench/.venv only).

tiktoken downloads each encoding's BPE ranks on first use, which this machine cannot do. The ranks
also ship inside a registry package, quicktok-v1 (``quicktok/data/o200k.vocab``: a little-endian
count, then per token a u16 length, the token's bytes and a u32 rank). They are rewritten here in
tiktoken's own file format and checked against the sha256 that tiktoken itself pins for
o200k_base, so the counts below are tiktoken's, byte for byte; a mismatch stops the run.

    echo '{"texts": ["hello"]}' | python -m bench.tokenizer      ->  {"counts": [1], "encoding": ...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from importlib.resources import files
from typing import Any

import tiktoken
from tiktoken_ext import openai_public


def quicktok_ranks() -> dict[bytes, int]:
    data = files("quicktok").joinpath("data/o200k.vocab").read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    offset, ranks = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, offset)
        token = data[offset + 2 : offset + 2 + length]
        (rank,) = struct.unpack_from("<I", data, offset + 2 + length)
        ranks[token] = rank
        offset += 6 + length
    return ranks


def tiktoken_file(ranks: dict[bytes, int]) -> bytes:
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    return b"".join(base64.b64encode(token) + b" %d\n" % rank for token, rank in ordered)


def o200k_base() -> tiktoken.Encoding:
    ranks = quicktok_ranks()
    pinned: dict[str, Any] = {}

    def load_verified(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        digest = hashlib.sha256(tiktoken_file(ranks)).hexdigest()
        if digest != expected_hash:
            raise RuntimeError(f"quicktok's o200k ranks hash to {digest}, tiktoken pins {expected_hash}")
        pinned["sha256"] = digest
        return ranks

    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = load_verified
    try:
        definition = openai_public.o200k_base()
    finally:
        openai_public.load_tiktoken_bpe = original
    return tiktoken.Encoding(**definition)


def main() -> None:
    encoding = o200k_base()
    texts = json.load(sys.stdin)["texts"]
    counts = [len(encoding.encode(text, disallowed_special=())) for text in texts]
    label = f"tiktoken {tiktoken.__version__} o200k_base (ranks from quicktok-v1, sha256 verified)"
    print(json.dumps({"counts": counts, "encoding": label}))


if __name__ == "__main__":
    main()
