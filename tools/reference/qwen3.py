#!/usr/bin/env python3
"""Reference embeddings for the Qwen3 embedding model (tests/fixtures/qwen3/).

For each case below the checkpoint is generated with our own mkcheckpoint (seeded, byte-for-byte
reproducible), loaded with Hugging Face transformers' AutoModel (Qwen3Model) on the CPU in
float32, and run on texts from the tokenizer corpus (tests/fixtures/qwen3_tokenizer/corpus.jsonl).
The outputs are committed, the checkpoints are not; the fixture records the SHA-256 of every
checkpoint file so the C test first proves mkcheckpoint reproduced the exact files seen here.

Per text, as Qwen3-Embedding is used:
  ids = tokenizers.Tokenizer(models/qwen3-tokenizer/tokenizer.json)
            .encode(text, add_special_tokens=False).ids + [151643]   (<|endoftext|>)
  h = Qwen3Model(ids).last_hidden_state[last id]       (after the final norm)
  embedding = h / ||h||
Texts run in batches of 16 that mix lengths: right padding with an attention mask and
position_ids 0..len-1 per text, pooled at index len-1, so each text's result is what it gets
alone (transformers' padding mask keeps the texts apart).

Files (per case NAME): NAME.emb.f32 (N, hidden) little-endian float32 embeddings;
NAME.ids.i32 every text's ids (eos included) back to back, lengths in index.json; index.json
also holds the texts, the checkpoint files' SHA-256 and the library versions.

Usage (regenerates everything; the 0.6B case needs ~1.5 min for mkcheckpoint and ~4 GB RAM):
    make B=build build/bin/mkcheckpoint
    $(tools/reference/setup-venv) tools/reference/qwen3.py [--mkcheckpoint build/bin/mkcheckpoint]
        [--only NAME] [--keep-dir DIR]   (DIR: keep the checkpoints there for benchmarks)
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import tokenizers
import torch
import transformers
from transformers import AutoModel

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "qwen3")
CORPUS = os.path.join(ROOT, "tests", "fixtures", "qwen3_tokenizer", "corpus.jsonl")
TOKENIZER = os.path.join(ROOT, "models", "qwen3-tokenizer", "tokenizer.json")
EOS = 151643
BATCH = 16

CASES = [
    # The main proof: a few hundred texts of up to 200 tokens on the tiny layout (GQA 2,
    # head_dim 32 != hidden/heads 16, random norm gains, "model." tensor names, F32).
    {"name": "tiny_f32", "preset": "qwen3-tiny", "args": ["--seed", "1"], "texts": 320,
     "max_tokens": 200},
    # attention_bias true, bare names, BF16 storage.
    {"name": "tiny_bias_bf16", "preset": "qwen3-tiny-bias",
     "args": ["--seed", "2", "--dtype", "bf16"], "texts": 24, "max_tokens": 120},
    # The published layout (hf init), BF16 as published; a handful of texts.
    {"name": "e06b_bf16", "preset": "qwen3-embedding-0.6b",
     "args": ["--seed", "3", "--dtype", "bf16"], "texts": 6, "max_tokens": 100},
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pick_texts(tok, n, max_tokens, seed):
    """n corpus texts of at most max_tokens ids (eos included), spread over the corpus and
    shuffled so that every batch mixes lengths; always includes the empty text if present."""
    with open(CORPUS, encoding="utf-8") as f:
        corpus = [json.loads(line)["text"] for line in f if line.strip()]
    ok = []
    for t in corpus:
        ids = tok.encode(t, add_special_tokens=False).ids + [EOS]
        if len(ids) <= max_tokens:
            ok.append((t, ids))
    step = len(ok) / n
    chosen = [ok[int(i * step)] for i in range(n)]
    empty = [p for p in ok if p[0] == ""]
    if empty and all(p[0] != "" for p in chosen):
        chosen[-1] = empty[0]
    # The longest eligible text too, so the limit is exercised.
    longest = max(ok, key=lambda p: len(p[1]))
    if all(p[0] != longest[0] for p in chosen):
        chosen[0] = longest
    random.Random(seed).shuffle(chosen)
    return chosen


def embed(model, id_lists):
    """Last-token embeddings (N, hidden), L2-normalised, in batches of BATCH (right padding)."""
    out = []
    for s in range(0, len(id_lists), BATCH):
        chunk = id_lists[s:s + BATCH]
        T = max(len(x) for x in chunk)
        ids = torch.zeros((len(chunk), T), dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
        pos = torch.arange(T).unsqueeze(0).expand(len(chunk), T)
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        last = torch.stack([h[i, len(x) - 1] for i, x in enumerate(chunk)])
        out.append(torch.nn.functional.normalize(last, p=2, dim=-1).numpy())
    return np.concatenate(out).astype("<f4")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mkcheckpoint", default=os.path.join(ROOT, "build", "bin", "mkcheckpoint"))
    ap.add_argument("--only", help="run only the case with this name (others kept)")
    ap.add_argument("--keep-dir", help="write checkpoints under this directory and keep them")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = tokenizers.Tokenizer.from_file(TOKENIZER)
    os.makedirs(OUT, exist_ok=True)
    index_path = os.path.join(OUT, "index.json")
    old = {}
    if os.path.exists(index_path):
        with open(index_path, encoding="utf-8") as f:
            old = {c["name"]: c for c in json.load(f).get("cases", [])}
    cases_out = []
    for case in CASES:
        if args.only and case["name"] != args.only:
            if case["name"] in old:
                cases_out.append(old[case["name"]])
            continue
        base = args.keep_dir or tempfile.mkdtemp(prefix="qwen3-ref-")
        ck = os.path.join(base, case["name"])
        try:
            if not os.path.exists(os.path.join(ck, "model.safetensors")):
                os.makedirs(ck, exist_ok=True)
                subprocess.run([args.mkcheckpoint, case["preset"], ck] + case["args"], check=True)
            files = {n: sha256_file(os.path.join(ck, n)) for n in sorted(os.listdir(ck))
                     if not n.startswith(".")}
            model = AutoModel.from_pretrained(ck, dtype=torch.float32)
            model.eval()
            cfg = model.config
            chosen = pick_texts(tok, case["texts"], case["max_tokens"], seed=len(case["name"]))
            id_lists = [ids for _, ids in chosen]
            emb = embed(model, id_lists)
            emb.tofile(os.path.join(OUT, case["name"] + ".emb.f32"))
            np.concatenate([np.array(x, dtype="<i4") for x in id_lists]).tofile(
                os.path.join(OUT, case["name"] + ".ids.i32"))
            # How far apart different texts are: the C tolerance (1e-4) must be far below this.
            sims = emb @ emb.T
            np.fill_diagonal(sims, -1)
            cases_out.append({
                "name": case["name"],
                "preset": case["preset"],
                "args": case["args"],
                "files": files,
                "hidden_size": cfg.hidden_size,
                "max_tokens": max(len(x) for x in id_lists),
                "batch": BATCH,
                "emb_file": case["name"] + ".emb.f32",
                "ids_file": case["name"] + ".ids.i32",
                "lens": [len(x) for x in id_lists],
                "texts": [t for t, _ in chosen],
                "max_cosine_between_texts": float(sims.max()),
            })
            print(f"{case['name']}: {len(id_lists)} texts, {sum(map(len, id_lists))} tokens, "
                  f"max cos between different texts {sims.max():.6f}", file=sys.stderr)
            del model
        finally:
            if not args.keep_dir:
                shutil.rmtree(base, ignore_errors=True)
    meta = {
        "generator": "tools/reference/qwen3.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "numpy_version": np.__version__,
        "eos_id": EOS,
        "cases": cases_out,
    }
    with open(index_path, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
