#!/usr/bin/env python3
"""Drops the function-name section from .wasm files (1.3 MB of igpt's 13 MB, ~0.2 MB gzipped).

Browsers need none of it: a panic's stack then names wasm function numbers instead of Rust paths.
rustc's `strip = true` would drop it too, but also the `target_features` section that wasm-bindgen
reads, so the site build strips after wasm-bindgen instead (a trunk post_build hook, and scripts/pkg.sh).
Usage: strip_wasm_names.py FILE_OR_DIR...  (a directory: every .wasm in it; with no argument, trunk's
staging directory, $TRUNK_STAGING_DIR)
"""
import os
import pathlib
import sys


def leb128(data, i):
    value, shift = 0, 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def without_names(data):
    if data[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    out, i = bytearray(data[:8]), 8
    while i < len(data):
        start, section = i, data[i]
        size, i = leb128(data, i + 1)
        end = i + size
        if section == 0:  # a custom section: its name comes first
            length, j = leb128(data, i)
            if data[j:j + length] == b"name":
                i = end
                continue
        out += data[start:end]
        i = end
    return bytes(out)


for arg in sys.argv[1:] or [os.environ["TRUNK_STAGING_DIR"]]:
    path = pathlib.Path(arg)
    for wasm in sorted(path.glob("*.wasm")) if path.is_dir() else [path]:
        before = wasm.read_bytes()
        after = without_names(before)
        wasm.write_bytes(after)
        print(f"strip_wasm_names: {wasm}: {len(before):,} -> {len(after):,} bytes")
