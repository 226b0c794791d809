#!/usr/bin/env python3
"""Writes each model's file sizes and sha256 into models/index.json, keeping its order and labels.

The page downloads a model file only to check it against these, caches it under its hash, and refuses
a file that does not match. Run after exporting or changing a model in models/; a test fails while the
index is stale.
"""
import hashlib
import json
import pathlib

# Optional: ablation-means.json (the inspector offers mean ablation when a model has it) and
# model.q6.safetensors (the light weights the page downloads instead of the full ones, igpt quantize),
# atlas.json and atlas.png (the feature atlas, igpt atlas).
FILES = ["model.safetensors", "model.q6.safetensors", "config.json", "preprocessor_config.json",
         "card.json", "ablation-means.json", "atlas.json", "atlas.png"]
models = pathlib.Path(__file__).resolve().parent.parent / "models"
index_path = models / "index.json"
index = json.loads(index_path.read_text())
for entry in index:
    folder = models / entry["path"]
    entry["files"] = {
        name: {"size": (folder / name).stat().st_size,
               "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
        for name in FILES if (folder / name).exists()
    }
lines = ",\n".join("  " + json.dumps(entry) for entry in index)
index_path.write_text(f"[\n{lines}\n]\n")
print(f"wrote {index_path}: {len(index)} models")
