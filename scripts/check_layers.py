#!/usr/bin/env python3
"""Fails when a source file includes a header of a layer above its own.

The layers, bottom first (docs/ARCHITECTURE.md, "Layers"): a file in a layer may include
headers of its own layer and of the layers before it in LAYERS, nothing else of ours. Run by
CTest (test `layering`), so an upward include fails the test suite:
    python3 scripts/check_layers.py [REPO_ROOT]
"""
import pathlib
import re
import sys

# (layer, folder), bottom first.
LAYERS = [
    ("base", "src/base"),
    ("kernels", "kernels"),
    ("core", "src/core"),
    ("ops", "src/ops"),
    ("autograd", "src/autograd"),
    ("nn", "src/nn"),
    ("data", "src/data"),
    ("optim", "src/optim"),
    ("io", "src/io"),
    ("decode", "src/decode"),
    ("eval", "src/eval"),
    ("dist", "src/dist"),
    ("train", "src/train"),
    ("bench", "src/bench"),
    ("cli", "src/cli"),
]
INCLUDE = re.compile(r'^[ \t]*#[ \t]*include\s+"([a-z_]+)/[^"]+"', re.M)
SUFFIXES = {".h", ".cc", ".cu", ".cuh"}


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    errors = []
    files = 0
    for name, folder in LAYERS:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix not in SUFFIXES:
                continue
            files += 1
            text = path.read_text(encoding="utf-8")
            for m in INCLUDE.finditer(text):
                target = m.group(1)
                if target not in rank:
                    errors.append(f"{path.relative_to(root)}: includes '{target}/...', which is no layer")
                elif rank[target] > rank[name]:
                    line = text.count("\n", 0, m.start()) + 1
                    errors.append(f"{path.relative_to(root)}:{line}: layer '{name}' includes "
                                  f"'{m.group(0).strip()}' of the layer above it, '{target}'")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_layers: {len(errors)} upward include(s) in {files} files "
              f"(order: {' < '.join(n for n, _ in LAYERS)})", file=sys.stderr)
        return 1
    if files == 0:
        print(f"check_layers: no sources under {root}", file=sys.stderr)
        return 1
    print(f"check_layers: {files} files, every include points down ({' < '.join(n for n, _ in LAYERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
