#!/usr/bin/python3
"""Writes small PNGs (and a CMYK JPEG) in the modes a user's dataset may hold, with PIL, and expected.json: the
8-bit values QuantScope must decode from each, as 1 (gray) and 3 (RGB) channels.

What "expected" means (tests/tst_image_folders.cpp pngModesDecodeAsStored):
  - values as stored, no gamma correction (a gAMA chunk is ignored, as PIL and torchvision do);
  - 16-bit samples scaled to 8 bits as round(v / 257);
  - alpha (RGBA, LA, a palette's or a gray image's tRNS) composed over black: round(v * a / 255);
  - colour to gray as PIL's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16;
  - gray replicated to RGB;
  - a CMYK JPEG as PIL's convert("RGB") decodes it.
Usage: /usr/bin/python3 tests/data/png_modes/make_png_modes.py
"""
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.dirname(os.path.abspath(__file__))
H, W = 3, 5
rng = np.random.default_rng(7)


def luma(rgb):
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.int64)


def over_black(v, a):
    return (v.astype(np.int64) * a.astype(np.int64) + 127) // 255


def add_gama(path, gamma):
    """Inserts a gAMA chunk (gamma * 100000) after IHDR."""
    data = open(path, "rb").read()
    ihdr_end = 8 + 4 + 4 + 13 + 4
    body = b"gAMA" + struct.pack(">I", int(round(gamma * 100000)))
    chunk = struct.pack(">I", 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    open(path, "wb").write(data[:ihdr_end] + chunk + data[ihdr_end:])


cases = {}

rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
Image.fromarray(rgb, "RGB").save(os.path.join(OUT, "rgb.png"))
cases["rgb.png"] = (luma(rgb), rgb)

Image.fromarray(rgb, "RGB").save(os.path.join(OUT, "rgb_gamma1.png"))
add_gama(os.path.join(OUT, "rgb_gamma1.png"), 1.0)
cases["rgb_gamma1.png"] = (luma(rgb), rgb)

rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
Image.fromarray(rgba, "RGBA").save(os.path.join(OUT, "rgba.png"))
comp = over_black(rgba[..., :3], rgba[..., 3:4])
cases["rgba.png"] = (luma(comp), comp)

la = rng.integers(0, 256, (H, W, 2), dtype=np.uint8)
Image.fromarray(la, "LA").save(os.path.join(OUT, "la.png"))
g = over_black(la[..., 0], la[..., 1])
cases["la.png"] = (g, np.stack([g] * 3, -1))

g16 = rng.integers(0, 65536, (H, W), dtype=np.uint16)
Image.fromarray(g16.astype(np.uint16), "I;16").save(os.path.join(OUT, "gray16.png"))
g8 = (g16.astype(np.int64) * 2 + 257) // (2 * 257)  # round(v / 257), halves up (none occur: v / 257 + 1/2 is never whole)
cases["gray16.png"] = (g8, np.stack([g8] * 3, -1))

# 16-bit RGB: PIL cannot write it; a minimal encoder (filter 0 rows, zlib).
rgb16 = rng.integers(0, 65536, (H, W, 3), dtype=np.uint16)
raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(H))
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(os.path.join(OUT, "rgb16.png"), "wb").write(png)
c8 = (rgb16.astype(np.int64) * 2 + 257) // (2 * 257)
cases["rgb16.png"] = (luma(c8), c8)

pal = rng.integers(0, 256, (4, 3), dtype=np.uint8)
alpha = [255, 0, 128, 30]
idx = rng.integers(0, 4, (H, W), dtype=np.uint8)
im = Image.fromarray(idx, "P")
im.putpalette(pal.flatten().tolist())
im.save(os.path.join(OUT, "palette_trns.png"), transparency=bytes(alpha))
prgb = pal[idx]
pa = np.array(alpha, dtype=np.int64)[idx][..., None]
comp = over_black(prgb, pa)
cases["palette_trns.png"] = (luma(comp), comp)

gray2 = rng.integers(0, 4, (H, W), dtype=np.uint8)  # 2-bit gray: 0, 85, 170, 255
raw = b"".join(b"\x00" + bytes([(int(r[0]) << 6) | (int(r[1]) << 4) | (int(r[2]) << 2) | int(r[3]), int(r[4]) << 6]) for r in gray2)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 2, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(os.path.join(OUT, "gray2.png"), "wb").write(png)
g = gray2.astype(np.int64) * 85
cases["gray2.png"] = (g, np.stack([g] * 3, -1))

# A CMYK JPEG as PIL writes it (Adobe marker, inverted inks): PIL's own decode is the reference.
cmyk = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
Image.fromarray(cmyk, "CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=95)
pil_rgb = np.asarray(Image.open(os.path.join(OUT, "cmyk.jpg")).convert("RGB")).astype(np.int64)
cases["cmyk.jpg"] = (luma(pil_rgb), pil_rgb)

expected = {name: {"height": H, "width": W, "gray": gy.flatten().tolist(), "rgb": c.flatten().tolist()}
            for name, (gy, c) in cases.items()}
with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=0)
for name in cases:
    # PIL reads the 8-bit files to the same stored values (the check the expectations rest on)
    im = Image.open(os.path.join(OUT, name))
    if name in ("rgb.png", "rgb_gamma1.png"):
        assert (np.asarray(im.convert("RGB")) == cases[name][1]).all(), name
        assert (np.asarray(im.convert("L")) == cases[name][0]).all(), name
print("wrote", len(cases), "cases")
