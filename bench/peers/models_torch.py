"""PyTorch + transformers peers for the CPU model benchmarks (bench/run runs them).

Same checkpoint files, same inputs, same thread count and the same timing rule as
embroker-bench (one warm-up, then repeats until `--seconds` have passed, at least 3, median), so
the two rows can be divided. Writes CSV rows "case,<col>,..." to stdout.

    python models_torch.py siglip DIR --threads 2 --batches 1,8,32
    python models_torch.py qwen3 DIR --threads 2
    python models_torch.py tokenizer TOKENIZER.json CORPUS.jsonl
"""
import argparse
import json
import statistics
import sys
import time


def median_seconds(fn, seconds):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 50 and (len(times) < 3 or time.perf_counter() - start < seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def siglip(args):
    import torch
    from transformers import SiglipVisionModel

    torch.set_num_threads(args.threads)
    model = SiglipVisionModel.from_pretrained(args.dir, torch_dtype=torch.float32).eval()
    size = model.config.image_size
    print("case,ms_per_batch,images_per_s")
    for b in [int(x) for x in args.batches.split(",")]:
        n = b * 3 * size * size
        # the same pixel pattern as embroker-bench: ((i * 2654435761) % 2001) / 1000 - 1
        idx = torch.arange(n, dtype=torch.int64)
        pixels = (((idx * 2654435761) % (2**32)) % 2001).float().div(1000).sub(1).reshape(b, 3, size, size)

        def run():
            with torch.inference_mode():
                model(pixel_values=pixels).pooler_output

        s = median_seconds(run, args.seconds)
        print(f"torch siglip batch {b},{s * 1e3:.3f},{b / s:.3f}")


def qwen3(args):
    import torch
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(args.dir, torch_dtype=torch.float32).eval()
    print("case,ms,tokens_per_s")
    for label, batch, length in [("16 x 64 tokens", 16, 64), ("1 x 512 tokens", 1, 512),
                                 ("1 x 16 tokens (query)", 1, 16)]:
        ids = (torch.arange(batch * length, dtype=torch.int64) * 7919 + 13) % 150000
        ids = ids.reshape(batch, length)
        ids[:, -1] = 151643
        mask = torch.ones_like(ids)

        def run():
            with torch.inference_mode():
                h = model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
                torch.nn.functional.normalize(h, dim=-1)

        s = median_seconds(run, args.seconds)
        print(f"torch qwen3 {label},{s * 1e3:.3f},{batch * length / s:.1f}")


def tokenizer(args):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.dir)
    texts = [json.loads(line)["text"] for line in open(args.corpus, encoding="utf-8")]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    def run():
        for t in texts:
            tok.encode(t, add_special_tokens=False)

    s = median_seconds(run, args.seconds)
    print("case,texts,MB,MB_per_s")
    print(f"tokenizers {tok.__class__.__module__} (1 thread),{len(texts)},{mb:.4f},{mb / s:.3f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["siglip", "qwen3", "tokenizer"])
    p.add_argument("dir")
    p.add_argument("corpus", nargs="?")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    {"siglip": siglip, "qwen3": qwen3, "tokenizer": tokenizer}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
