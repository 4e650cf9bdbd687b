#!/usr/bin/env python3
"""Reference pooler_output fixtures for the SigLIP vision tower (tests/fixtures/siglip/).

For each case below, the checkpoint is generated with our own mkcheckpoint (seeded, byte-for-byte
reproducible), loaded with Hugging Face transformers' SiglipVisionModel on the CPU in float32,
and run on pixel_values; the outputs are committed, the checkpoints are not. The fixture records
the SHA-256 of every checkpoint file, so the C test first proves that mkcheckpoint reproduced the
exact files the reference saw, then compares its pooler_output with transformers'.

Inputs are pixel_values (N, 3, S, S) float32:
  - for the 64-pixel tiny model, the image engineer's committed Pillow-exact pixel_values under
    tests/fixtures/images/pixel_values/*.f32 when present (real photos and synthetic modes);
  - otherwise and additionally, deterministic pseudo-random values in [-1, 1): element i of the
    input with seed s is splitmix64 output number i+1 of state s, top 24 bits / 2^23 - 1
    (tests/unit/test_siglip.c generates the same values).
Random pixels are fine for proving the model's arithmetic; the image pipeline has its own tests.

Usage (regenerates everything; a few seconds plus ~10 s for the base model):
    make B=build build/bin/mkcheckpoint
    $(tools/reference/setup-venv) tools/reference/siglip.py [--mkcheckpoint build/bin/mkcheckpoint]
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from transformers import SiglipVisionModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "siglip")

# name, mkcheckpoint arguments, inputs (("image", file) | ("random", seed)), batches to run
CASES = [
    {
        "name": "tiny_f32",
        "preset": "siglip-tiny",
        "args": ["--seed", "1"],
        "inputs": "images+random",
    },
    {
        "name": "tiny_full_bf16",
        "preset": "siglip-tiny",
        "args": ["--seed", "2", "--dtype", "bf16", "--full"],
        "inputs": [("random", 101), ("random", 102), ("random", 103)],
    },
    {
        "name": "tiny_sharded_f16",
        "preset": "siglip-tiny",
        "args": ["--seed", "3", "--dtype", "f16", "--shards", "3"],
        "inputs": [("random", 201), ("random", 202)],
    },
    {
        "name": "base_f32",
        "preset": "siglip-base-patch16-224",
        "args": ["--seed", "5"],
        "inputs": [("random", 301), ("random", 302)],
    },
]

MASK64 = (1 << 64) - 1


def random_pixels(seed, n):
    """n float32 values in [-1, 1): splitmix64 stream of `seed`, top 24 bits."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    top = (z >> np.uint64(40)).astype(np.float64)
    return (top / float(1 << 23) - 1.0).astype(np.float32)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_inputs(size):
    index = os.path.join(ROOT, "tests", "fixtures", "images", "index.json")
    if not os.path.exists(index):
        return []
    with open(index) as f:
        meta = json.load(f)
    out = []
    for img in meta.get("images", []):
        pv = img.get("pixel_values")
        if pv and pv.get("size") == size:
            out.append(("image", "images/" + pv["file"]))
    return out


def load_input(kind, ref, size):
    n = 3 * size * size
    if kind == "random":
        return random_pixels(ref, n).reshape(3, size, size)
    arr = np.fromfile(os.path.join(ROOT, "tests", "fixtures", ref), dtype="<f4")
    assert arr.size == n, (ref, arr.size, n)
    return arr.reshape(3, size, size)


def input_entry(kind, ref):
    """Fixture entry of an input; image inputs carry the SHA-256 of the file they were read
    from, so a test notices when the image fixtures were regenerated under it."""
    entry = {"kind": kind, "ref": ref}
    if kind == "image":
        entry["sha256"] = sha256_file(os.path.join(ROOT, "tests", "fixtures", ref))
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mkcheckpoint", default=os.path.join(ROOT, "build", "bin", "mkcheckpoint"))
    ap.add_argument("--only", help="run only the case with this name (others kept)")
    args = ap.parse_args()
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    index_path = os.path.join(OUT, "index.json")
    old = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            old = {c["name"]: c for c in json.load(f).get("cases", [])}
    cases_out = []
    for case in CASES:
        if args.only and case["name"] != args.only:
            if case["name"] in old:
                cases_out.append(old[case["name"]])
            continue
        tmp = tempfile.mkdtemp(prefix="siglip-ref-")
        try:
            ck = os.path.join(tmp, "ckpt")
            subprocess.run([args.mkcheckpoint, case["preset"], ck] + case["args"], check=True)
            files = {name: sha256_file(os.path.join(ck, name)) for name in sorted(os.listdir(ck))}
            model = SiglipVisionModel.from_pretrained(ck, dtype=torch.float32)
            model.eval()
            cfg = model.config
            size = cfg.image_size
            if case["inputs"] == "images+random":
                inputs = image_inputs(size) + [("random", 11), ("random", 12)]
            else:
                inputs = list(case["inputs"])
            pixels = np.stack([load_input(k, r, size) for k, r in inputs])
            with torch.no_grad():
                pooled = model(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
            out_file = case["name"] + ".pooled.f32"
            pooled.astype("<f4").tofile(os.path.join(OUT, out_file))
            cases_out.append({
                "name": case["name"],
                "preset": case["preset"],
                "args": case["args"],
                "files": files,
                "image_size": size,
                "hidden_size": cfg.hidden_size,
                "inputs": [input_entry(k, r) for k, r in inputs],
                "pooled_file": out_file,
            })
            print(f"{case['name']}: {len(inputs)} inputs, pooled {pooled.shape}", file=sys.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    meta = {
        "generator": "tools/reference/siglip.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "numpy_version": np.__version__,
        "random_pixels": "splitmix64(seed) element i = output i+1, top 24 bits / 2^23 - 1",
        "cases": cases_out,
    }
    with open(index_path, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
