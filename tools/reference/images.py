#!/usr/bin/env python3
"""tools/reference/images.py — Pillow reference fixtures for embroker's image path.

Writes tests/fixtures/images/ (committed): what Pillow decodes, how Pillow's BICUBIC resize
turns it into the model's square input, and what transformers' PIL-backend SigLIP processor
makes of it (pixel_values). The C tests (tests/unit/test_image.c, test_resize.c,
test_preprocess.c) compare embroker's decoder, resize and normalisation against these files.

    $(tools/reference/setup-venv) tools/reference/images.py [--images DIR]

Inputs: every image in ../shared/data/images (read in place, never copied: only hashes and a
64x64 resize are stored) plus synthetic images for every Pillow mode the decoder must handle,
written into tests/fixtures/images/synthetic/ (small, committed), plus damaged files in bad/.

Everything is computed with Pillow directly (Image.open -> convert("RGB") -> resize BICUBIC);
the pixel_values come from transformers' SiglipImageProcessorPil (the numpy/Pillow backend, not
the torchvision one), fed the converted RGB image so that its only job is resize + rescale +
normalise. Separately, transformers' own convert_to_rgb (which composites alpha onto white) is
recorded per image as rgb_white_sha256, for the optional EB_ALPHA_WHITE decode mode.
"""
import argparse
import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, features

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "images")
SIZES = (224, 64, 384)  # base model, tiny checkpoint, so400m
RAW_SIZE = 64  # resized arrays stored in full at this size (to say where a mismatch is)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def rgb_bytes(im):
    a = np.asarray(im, dtype=np.uint8)
    assert a.ndim == 3 and a.shape[2] == 3, a.shape
    return np.ascontiguousarray(a).tobytes()


# ---- hand-written PNGs (Pillow cannot write 16-bit RGB, LA16, RGBA16 or 1/2/4-bit gray) ------
def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def png_file(w, h, depth, color_type, rows, extra=b"", idat=None):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"".join(b"\x00" + r for r in rows))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def adam7_idat(a, row_bytes):
    """Interlaced IDAT payload for the (h, w[, c]) array a; row_bytes packs one row of pixels."""
    h, w = a.shape[:2]
    raw = b""
    for x0, y0, dx, dy in ADAM7:
        sub = a[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        raw += b"".join(b"\x00" + row_bytes(sub[y]) for y in range(sub.shape[0]))
    return zlib.compress(raw)


def pack_bits(vals, depth):
    out = bytearray()
    per = 8 // depth
    for i in range(0, len(vals), per):
        byte = 0
        for j in range(per):
            v = vals[i + j] if i + j < len(vals) else 0
            byte |= (int(v) & ((1 << depth) - 1)) << (8 - depth * (j + 1))
        out.append(byte)
    return bytes(out)


def _interlaced(w, h, depth, color_type, a, row_bytes, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra
            + png_chunk(b"IDAT", adam7_idat(a, row_bytes)) + png_chunk(b"IEND", b""))


def smooth(rng, w, h, c, hi=255, dtype=np.uint8):
    """A gradient plus noise: realistic for JPEG, still touches every value range."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 7 + y * 3 + k * 50) % 256 for k in range(c)], axis=-1).astype(np.float64)
    noise = rng.integers(-40, 41, size=(h, w, c))
    a = np.clip(base + noise, 0, 255) / 255.0 * hi
    return np.squeeze(a.round().astype(dtype), axis=-1) if c == 1 else a.round().astype(dtype)


def synthetic(rng):
    """Returns [(file name, bytes)]: one small image per mode/format the decoder handles."""
    out = []

    def save(name, im, fmt, **kw):
        b = io.BytesIO()
        im.save(b, fmt, **kw)
        out.append((name, b.getvalue()))

    w, h = 37, 23
    save("L.png", Image.fromarray(smooth(rng, w, h, 1), "L"), "PNG")
    save("LA.png", Image.fromarray(smooth(rng, w, h, 2), "LA"), "PNG")
    save("RGB_odd_101x3.png", Image.fromarray(smooth(rng, 101, 3, 3), "RGB"), "PNG")
    save("RGBA.png", Image.fromarray(smooth(rng, w, h, 4), "RGBA"), "PNG")
    pal = rng.integers(0, 256, size=256 * 3).astype(np.uint8).tolist()
    p = Image.fromarray(rng.integers(0, 256, size=(h, w)).astype(np.uint8), "P")
    p.putpalette(pal)
    save("P.png", p, "PNG")
    pt = p.copy()
    pt.info["transparency"] = bytes(rng.integers(0, 256, size=200).astype(np.uint8).tolist())
    save("P_trns.png", pt, "PNG", transparency=pt.info["transparency"])
    p4 = Image.fromarray(rng.integers(0, 16, size=(h, w)).astype(np.uint8), "P")
    p4.putpalette(pal[:48])
    save("P4.png", p4, "PNG", bits=4)
    save("I16.png", Image.fromarray(smooth(rng, w, h, 1, hi=600, dtype=np.uint16)), "PNG")
    # 16-bit RGB / RGBA / LA and sub-byte grayscale, written by hand
    a16 = smooth(rng, w, h, 3, hi=65535, dtype=np.uint16)
    out.append(("RGB16.png", png_file(w, h, 16, 2, [a16[y].astype(">u2").tobytes() for y in range(h)])))
    a16 = smooth(rng, w, h, 4, hi=65535, dtype=np.uint16)
    out.append(("RGBA16.png", png_file(w, h, 16, 6, [a16[y].astype(">u2").tobytes() for y in range(h)])))
    a16 = smooth(rng, w, h, 2, hi=65535, dtype=np.uint16)
    out.append(("LA16.png", png_file(w, h, 16, 4, [a16[y].astype(">u2").tobytes() for y in range(h)])))
    for depth in (1, 2, 4):
        v = rng.integers(0, 1 << depth, size=(h, w))
        out.append((f"L{depth}bit.png", png_file(w, h, depth, 0, [pack_bits(v[y], depth) for y in range(h)])))
    # palette with indices beyond the PLTE entries (Pillow shows them as black)
    v = rng.integers(0, 8, size=(h, w)).astype(np.uint8)
    out.append(("P_short_plte.png", png_file(w, h, 8, 3, [v[y].tobytes() for y in range(h)],
                                             extra=png_chunk(b"PLTE", bytes(pal[:12])))))
    # grayscale and RGB with a tRNS colour key
    g = smooth(rng, w, h, 1)
    out.append(("L_trns.png", png_file(w, h, 8, 0, [g[y].tobytes() for y in range(h)],
                                       extra=png_chunk(b"tRNS", struct.pack(">H", int(g[0, 0]))))))
    c = smooth(rng, w, h, 3)
    out.append(("RGB_trns.png", png_file(w, h, 8, 2, [c[y].tobytes() for y in range(h)],
                                         extra=png_chunk(b"tRNS", struct.pack(">HHH", *[int(x) for x in c[0, 0]])))))
    # JPEG: grayscale, CMYK (Adobe), progressive, 4:2:0 with odd size, 4:4:4
    rgb = Image.fromarray(smooth(rng, 131, 97, 3), "RGB")
    save("gray.jpg", Image.fromarray(smooth(rng, w, h, 1), "L"), "JPEG", quality=90)
    save("cmyk.jpg", Image.fromarray(smooth(rng, w, h, 4), "CMYK"), "JPEG", quality=90)
    save("progressive.jpg", rgb, "JPEG", quality=85, progressive=True)
    save("subsample420_odd.jpg", Image.fromarray(smooth(rng, 45, 29, 3), "RGB"), "JPEG", quality=80, subsampling=2)
    save("subsample444.jpg", rgb, "JPEG", quality=95, subsampling=0)
    save("subsample422.jpg", Image.fromarray(smooth(rng, w, h, 3), "RGB"), "JPEG", quality=75, subsampling=1)
    # WebP: lossy, lossless with alpha, lossy with alpha
    save("lossy.webp", rgb, "WEBP", quality=80)
    save("lossless_alpha.webp", Image.fromarray(smooth(rng, w, h, 4), "RGBA"), "WEBP", lossless=True, exact=True)
    save("lossy_alpha.webp", Image.fromarray(smooth(rng, 67, 45, 4), "RGBA"), "WEBP", quality=70)
    # Adam7-interlaced PNGs (Pillow cannot write them): 8-bit RGB, 4-bit palette, 16-bit gray
    c = smooth(rng, w, h, 3)
    out.append(("RGB_interlaced.png", _interlaced(w, h, 8, 2, c, lambda r: r.tobytes())))
    v = rng.integers(0, 16, size=(h, w)).astype(np.uint8)
    out.append(("P4_interlaced.png", _interlaced(w, h, 4, 3, v, lambda r: pack_bits(r, 4),
                                                 extra=png_chunk(b"PLTE", bytes(pal[:48])))))
    g16 = smooth(rng, w, h, 1, hi=400, dtype=np.uint16)
    out.append(("I16_interlaced.png", _interlaced(w, h, 16, 0, g16, lambda r: r.astype(">u2").tobytes())))
    # a complete JPEG with garbage before its SOS marker: libjpeg warns ("Corrupt JPEG data:
    # 3 extraneous bytes before marker 0xda"), Pillow ignores the warning and so must we
    d = dict(out)["subsample422.jpg"]
    i = d.index(b"\xff\xda")
    out.append(("warn_extraneous_bytes.jpg", d[:i] + b"\x00\x11\x22" + d[i:]))
    return out


def bad_inputs(synth):
    """Damaged or hostile files: (name, bytes, expected embroker status)."""
    d = dict(synth)
    jpg = d["progressive.jpg"]
    base_jpg = d["subsample444.jpg"]
    png = d["RGBA.png"]
    webp = d["lossy.webp"]
    rng = np.random.default_rng(7)
    bad = [
        ("truncated.jpg", base_jpg[: len(base_jpg) // 2], "decode"),
        ("truncated_progressive.jpg", jpg[: len(jpg) * 2 // 3], "decode"),
        ("truncated.png", png[: len(png) // 2], "decode"),
        ("truncated.webp", webp[: len(webp) // 2], "decode"),
        ("header_only.jpg", base_jpg[:200], "decode"),
        ("garbage.bin", bytes(rng.integers(0, 256, size=4096).astype(np.uint8).tolist()), "decode"),
        ("gif87a.gif", b"GIF87a" + bytes(64), "decode"),
    ]
    # PNG whose IDAT bytes are flipped (CRC mismatch)
    i = png.index(b"IDAT") + 20
    bad.append(("corrupt_crc.png", png[:i] + bytes([png[i] ^ 0xFF]) + png[i + 1:], "decode"))
    # PNG with a valid CRC but an undecodable zlib stream
    w, h = 37, 23
    bad.append(("corrupt_zlib.png", png_file(w, h, 8, 2, None, idat=b"\x78\x9c" + bytes(rng.integers(0, 256, 300).astype(np.uint8).tolist())), "decode"))
    # bombs: headers that claim far more pixels than the 64 MP default allows
    bad.append(("bomb_100000x100000.png", png_file(100000, 100000, 8, 2, None, idat=zlib.compress(b"\x00" * 1000)), "too_large"))
    sof = base_jpg.index(b"\xff\xc0")
    bomb = bytearray(base_jpg)
    bomb[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    bad.append(("bomb_60000x60000.jpg", bytes(bomb), "too_large"))
    # WebP VP8X header with a 16384x16384 canvas and no image data
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0]) + (16383).to_bytes(3, "little") * 2
    bad.append(("bomb_16384x16384.webp", b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x, "too_large"))
    # tiny images: 1x1 and 1-pixel-high are refused (see docs/images.md)
    b = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(b, "PNG")
    bad.append(("1x1.png", b.getvalue(), "invalid"))
    b = io.BytesIO()
    Image.new("RGB", (1, 1), (10, 20, 30)).save(b, "JPEG")
    bad.append(("1x1.jpg", b.getvalue(), "invalid"))
    b = io.BytesIO()
    Image.new("RGB", (50, 1), (10, 20, 30)).save(b, "PNG")
    bad.append(("50x1.png", b.getvalue(), "invalid"))
    return bad


def pillow_verdict(data):
    try:
        im = Image.open(io.BytesIO(data))
        im.convert("RGB")
        return "ok"
    except Exception as e:  # noqa: BLE001 - we record any refusal
        return type(e).__name__


def resize_cases(rng):
    """Resize-only cases beyond photographs: (name, src array HxWx3, out_w, out_h)."""
    cases = []
    cases.append(("up_5x7_to_224", rng.integers(0, 256, (7, 5, 3)), 224, 224))
    cases.append(("identity_224", rng.integers(0, 256, (224, 224, 3)), 224, 224))
    cases.append(("edge_300x1_to_224", rng.integers(0, 256, (1, 300, 3)), 224, 224))
    cases.append(("aspect_2000x10_to_224", rng.integers(0, 256, (10, 2000, 3)), 224, 224))
    cases.append(("aspect_2000x10_to_64", None, 64, 64))  # reuses the 2000x10 source
    cases.append(("width_only_224x50_to_224x64", rng.integers(0, 256, (50, 224, 3)), 224, 64))
    cases.append(("height_only_50x224_to_64x224", rng.integers(0, 256, (224, 50, 3)), 64, 224))
    cases.append(("down_nonsquare_37x23_to_17x5", rng.integers(0, 256, (23, 37, 3)), 17, 5))
    cases.append(("extremes_0_255_97x61_to_64", (rng.integers(0, 2, (61, 97, 3)) * 255), 64, 64))
    # Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
    # pixels as the width: the boundary (100 - 40 = 2 * (60 - 30): horizontal first) and beyond
    cases.append(("order_boundary_60x100_to_30x40", rng.integers(0, 256, (100, 60, 3)), 30, 40))
    cases.append(("order_vfirst_60x101_to_30x40", rng.integers(0, 256, (101, 60, 3)), 30, 40))
    cases.append(("order_vfirst_wider_100x51_to_200x50", rng.integers(0, 256, (51, 100, 3)), 200, 50))
    cases.append(("order_vfirst_tall_90x500_to_64", rng.integers(0, 256, (500, 90, 3)), 64, 64))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default=os.path.join(ROOT, "..", "shared", "data", "images"))
    args = ap.parse_args()
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.image_transforms import convert_to_rgb
    import transformers

    rng = np.random.default_rng(20261128)
    for sub in ("synthetic", "resized64", "pixel_values", "bad", "resize"):
        os.makedirs(os.path.join(OUT, sub), exist_ok=True)

    synth = synthetic(rng)
    for name, data in synth:
        with open(os.path.join(OUT, "synthetic", name), "wb") as f:
            f.write(data)

    items = []
    shared = sorted(n for n in os.listdir(args.images) if n.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
    for n in shared:
        with open(os.path.join(args.images, n), "rb") as f:
            items.append(("shared", n, f.read()))
    items += [("synthetic", n, d) for n, d in synth]

    pv_items = {"astronaut.png": None, "camera.png": None, "licorice.webp": None, "cmyk.jpg": None,
                "RGBA.png": None, "I16.png": None, "shell-720x1440.jpg": "imagenet"}
    mean_std = {None: ([0.5] * 3, [0.5] * 3), "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])}

    index_images = []
    for source, name, data in items:
        stem = name.rsplit(".", 1)[0]
        im = Image.open(io.BytesIO(data))
        mode, fmt = im.mode, im.format
        rgb = im.convert("RGB")
        raw = rgb_bytes(rgb)
        white = convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True)
        entry = {
            "source": source, "file": name, "format": fmt.lower(), "pillow_mode": mode,
            "width": rgb.width, "height": rgb.height, "rgb_sha256": sha(raw),
            "rgb_white_sha256": sha(np.ascontiguousarray(white).tobytes()),
            "resized_sha256": {},
        }
        if source == "synthetic":
            entry["rgb_first_pixels"] = list(raw[:12])
        for s in SIZES:
            r = rgb.resize((s, s), Image.Resampling.BICUBIC)
            rb = rgb_bytes(r)
            entry["resized_sha256"][str(s)] = sha(rb)
            if s == RAW_SIZE:
                rel = f"resized64/{stem}.rgb"
                with open(os.path.join(OUT, rel), "wb") as f:
                    f.write(rb)
                entry["resized64_file"] = rel
        if name in pv_items:
            mean, std = mean_std[pv_items[name]]
            proc = SiglipImageProcessorPil(size={"height": RAW_SIZE, "width": RAW_SIZE},
                                           image_mean=mean, image_std=std)
            pv = proc(images=rgb, return_tensors="np")["pixel_values"][0]
            assert pv.shape == (3, RAW_SIZE, RAW_SIZE) and pv.dtype == np.float32, (pv.shape, pv.dtype)
            # the processor's own resize must be the Pillow resize recorded above
            r64 = np.asarray(rgb.resize((RAW_SIZE, RAW_SIZE), Image.Resampling.BICUBIC), np.float64)
            check = ((r64 * (1 / 255)).astype(np.float32) - np.float32(mean)) / np.float32(std)
            assert np.array_equal(check.transpose(2, 0, 1), pv), "processor math differs from the documented order"
            rel = f"pixel_values/{stem}.f32"
            with open(os.path.join(OUT, rel), "wb") as f:
                f.write(np.ascontiguousarray(pv, dtype="<f4").tobytes())
            entry["pixel_values"] = {"file": rel, "size": RAW_SIZE, "mean": mean, "std": std,
                                     "rescale_factor": proc.rescale_factor}
        index_images.append(entry)
        print(f"{source:9s} {name:28s} {mode:5s} {rgb.width}x{rgb.height}", file=sys.stderr)

    bad = []
    for name, data, expect in bad_inputs(synth):
        with open(os.path.join(OUT, "bad", name), "wb") as f:
            f.write(data)
        bad.append({"file": f"bad/{name}", "expect": expect, "pillow": pillow_verdict(data)})

    cases = []
    last_src = None
    for name, src, ow, oh in resize_cases(rng):
        if src is None:
            src, rel = last_src
        else:
            src = np.ascontiguousarray(src.astype(np.uint8))
            rel = f"resize/{name}.rgb"
            with open(os.path.join(OUT, rel), "wb") as f:
                f.write(src.tobytes())
            last_src = (src, rel)
        out = Image.fromarray(src, "RGB").resize((ow, oh), Image.Resampling.BICUBIC)
        ob = rgb_bytes(out)
        case = {"name": name, "src_file": rel, "src_width": src.shape[1], "src_height": src.shape[0],
                "out_width": ow, "out_height": oh, "sha256": sha(ob)}
        if len(ob) <= 64 * 64 * 3:
            orel = f"resize/{name}.out.rgb"
            with open(os.path.join(OUT, orel), "wb") as f:
                f.write(ob)
            case["out_file"] = orel
        cases.append(case)

    index = {
        "generator": "tools/reference/images.py",
        "pillow_version": PIL.__version__,
        "libjpeg_turbo_version": features.version("libjpeg_turbo"),
        "libwebp_version": features.version("webp"),
        "numpy_version": np.__version__,
        "transformers_version": transformers.__version__,
        "sizes": list(SIZES),
        "shared_images_dir": "../shared/data/images",
        "images": index_images,
        "bad": bad,
        "resize_cases": cases,
    }
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
