#!/usr/bin/env python3
"""Counts the drawn pixels of a PNG (Python standard library only), for tests/test_plot.cc.

    png_ink.py IMAGE.png [#rrggbb ...]

Prints one JSON object: {"width", "height", "ink", "colors": {"#rrggbb": n, ...}} where "ink"
is the number of pixels that are neither (near-)white nor (near-)transparent, and each colour
asked for counts the pixels within a small distance of it (anti-aliasing moves edges away from
the exact colour; line interiors keep it). Decodes 8-bit greyscale/RGB/RGBA, non-interlaced
PNGs, which is what rsvg-convert writes; anything else is an error (exit 1).
"""
import json
import struct
import sys
import zlib


def decode_png(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("no IHDR chunk")
    width, height, depth, color_type, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {color_type}, "
                         f"interlace {interlace}")
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
            elif ftype != 0:
                raise ValueError(f"bad filter type {ftype} in row {y}")
        rows.append(line)
        prev = line
    return width, height, channels, rows


def main():
    width, height, channels, rows = decode_png(open(sys.argv[1], "rb").read())
    wanted = {c: tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in sys.argv[2:]}
    counts = {c: 0 for c in wanted}
    ink = 0
    for line in rows:
        for x in range(width):
            px = line[x * channels:(x + 1) * channels]
            if channels <= 2:
                rgb, alpha = (px[0],) * 3, (px[1] if channels == 2 else 255)
            else:
                rgb, alpha = tuple(px[:3]), (px[3] if channels == 4 else 255)
            if alpha < 16 or min(rgb) > 240:
                continue
            ink += 1
            for name, target in wanted.items():
                if sum(abs(p - t) for p, t in zip(rgb, target)) <= 24:
                    counts[name] += 1
    print(json.dumps({"width": width, "height": height, "ink": ink, "colors": counts}))


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, zlib.error) as e:
        print(f"png_ink.py: {e}", file=sys.stderr)
        sys.exit(1)
