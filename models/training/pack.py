"""The shipped graph is committed compressed: `model.onnx.zst` (zstd, level 19), about 36 %
smaller, so the model's files stay within the 60 MB budget of ADR 0004. The engine
decompresses it in memory when it loads the model and checks the card's sha256 of the
compressed file.

The training tools work on a plain `model.onnx`: `unpack(dir)` writes it next to the
compressed file (it is git-ignored), `pack(dir)` compresses it again and moves the card's
`[files]` checksum from `model.onnx` to `model.onnx.zst`.

    .venv-train/bin/python models/training/pack.py [DIR]      # pack (default: the shipped model)
    .venv-train/bin/python models/training/pack.py --unpack [DIR]
"""

import hashlib
import pathlib
import re
import sys

import zstandard

PLAIN = "model.onnx"
PACKED = "model.onnx.zst"
LEVEL = 19


def unpack(model_dir: pathlib.Path) -> None:
    """Writes `model.onnx` from `model.onnx.zst` unless it is already there."""
    plain, packed = model_dir / PLAIN, model_dir / PACKED
    if plain.exists() or not packed.exists():
        return
    with packed.open("rb") as src, plain.open("wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)


def pack(model_dir: pathlib.Path) -> None:
    """Compresses `model.onnx` into `model.onnx.zst`, removes the plain file and points the
    card's checksum at the compressed one."""
    plain, packed = model_dir / PLAIN, model_dir / PACKED
    if not plain.exists():
        raise SystemExit(f"{plain} does not exist: nothing to pack")
    packed.write_bytes(zstandard.ZstdCompressor(level=LEVEL).compress(plain.read_bytes()))
    plain.unlink()
    card = model_dir / "model.toml"
    text = card.read_text()
    sha = hashlib.sha256(packed.read_bytes()).hexdigest()
    text = re.sub(rf'^"{re.escape(PLAIN)}" = ".*"\n', "", text, flags=re.M)
    text = re.sub(rf'^"{re.escape(PACKED)}" = ".*"\n', "", text, flags=re.M)
    text = re.sub(r"(\n\[files\]\n)", lambda m: m.group(1) + f'"{PACKED}" = "{sha}"\n', text, count=1)
    card.write_text(text)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--unpack"]
    model_dir = pathlib.Path(args[0]) if args else pathlib.Path(__file__).resolve().parents[1] / "intent-e5-de-en"
    if "--unpack" in sys.argv[1:]:
        unpack(model_dir)
    else:
        pack(model_dir)


if __name__ == "__main__":
    main()
