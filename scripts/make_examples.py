"""Writes www/examples/: a few Fashion-MNIST test images as PNG, for the page's completion demo.
Standard library only. Usage: python3 scripts/make_examples.py"""
import gzip, json, struct, zlib, pathlib

SRC = "/usr/share/datasets/fashion-mnist/"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
out = pathlib.Path(__file__).resolve().parent.parent / "www" / "examples"
out.mkdir(parents=True, exist_ok=True)
images = gzip.open(SRC + "t10k-images-idx3-ubyte.gz").read()[16:]
labels = gzip.open(SRC + "t10k-labels-idx1-ubyte.gz").read()[8:]

def png(pixels, w, h):
    raw = b"".join(b"\x00" + pixels[y * w:(y + 1) * w] for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))

index, seen = [], set()
for i, label in enumerate(labels):
    if label in seen:
        continue
    seen.add(label)
    name = f"test-{i}.png"
    (out / name).write_bytes(png(images[i * 784:(i + 1) * 784], 28, 28))
    index.append({"file": name, "label": f"{CLASSES[label]} (test #{i})"})
    if len(seen) == 8:
        break
(out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
print(f"wrote {len(index)} examples to {out}")
