"""cpu_siglip_compare — SigLIP forward, two embroker builds and PyTorch, interleaved by round.

On a machine shared with other work the load changes from minute to minute, so running one
system's cases and then the other's compares different machines. This runs, for every round and
batch size, embroker build A, embroker build B (each as bench/kernels/cpu_siglip_drv.c, a fresh
process that loads the checkpoint) and PyTorch + transformers (this process, model loaded once),
each for `--seconds`, and reports the median over rounds of each system's per-round median, plus
the ratio PyTorch / embroker taken within each round (the fairest number when the load drifts).

    var/refvenv/bin/python bench/kernels/cpu_siglip_compare.py \
        --dir var/models/siglip-base-patch16-224 --before /tmp/drv-before --after /tmp/drv-after \
        --rounds 5 --seconds 3 --batches 1,8 --threads 2
"""
import argparse
import re
import statistics
import subprocess
import time


def pixels(torch, b, size):
    idx = torch.arange(b * 3 * size * size, dtype=torch.int64)
    return (((idx * 2654435761) % (2**32)) % 2001).float().div(1000).sub(1).reshape(b, 3, size, size)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--before", required=True, help="cpu_siglip_drv built from the old tree")
    p.add_argument("--after", required=True, help="cpu_siglip_drv built from the new tree")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch
    from transformers import SiglipVisionModel

    torch.set_num_threads(a.threads)
    model = SiglipVisionModel.from_pretrained(a.dir, torch_dtype=torch.float32).eval()
    size = model.config.image_size
    batches = [int(b) for b in a.batches.split(",")]
    drivers = [("before", a.before), ("after", a.after)]
    res = {}
    for r in range(a.rounds):
        for b in batches:
            for name, drv in drivers:
                out = subprocess.run([drv, a.dir, str(a.threads), str(b), str(a.seconds)],
                                     capture_output=True, text=True, check=True).stdout
                m = re.search(r"wall median ([\d.]+) min ([\d.]+)", out)
                res.setdefault((name, b), []).append((float(m.group(1)), float(m.group(2))))
            px = pixels(torch, b, size)
            with torch.inference_mode():
                model(pixel_values=px)
                t, start = [], time.perf_counter()
                while len(t) < 200 and (len(t) < 3 or time.perf_counter() - start < a.seconds):
                    t0 = time.perf_counter()
                    model(pixel_values=px).pooler_output
                    t.append(time.perf_counter() - t0)
            res.setdefault(("torch", b), []).append((statistics.median(t) * 1e3, min(t) * 1e3))
        print(f"round {r}: " + ", ".join(f"{k[0]} b{k[1]} {v[-1][0]:.1f} ms" for k, v in res.items()),
              flush=True)

    print()
    print("| case | median of round medians (ms) | range of round medians | best run (ms) |")
    print("|---|---:|---:|---:|")
    for b in batches:
        for name in ["before", "after", "torch"]:
            meds = [x[0] for x in res[(name, b)]]
            print(f"| {name} b{b} | {statistics.median(meds):.1f} | {min(meds):.1f}-{max(meds):.1f} "
                  f"| {min(x[1] for x in res[(name, b)]):.1f} |")
    print()
    print("| batch | torch / after, per round: median (range) | torch / before | after vs before | rounds |")
    print("|---:|---:|---:|---:|---:|")
    for b in batches:
        t, bf, af = res[("torch", b)], res[("before", b)], res[("after", b)]
        ta = [x[0] / y[0] for x, y in zip(t, af)]
        tb = [x[0] / y[0] for x, y in zip(t, bf)]
        ab = [x[0] / y[0] for x, y in zip(bf, af)]
        print(f"| {b} | {statistics.median(ta):.3f} ({min(ta):.3f}-{max(ta):.3f}) "
              f"| {statistics.median(tb):.3f} ({min(tb):.3f}-{max(tb):.3f}) "
              f"| {statistics.median(ab):.3f} | {len(ta)} |")


if __name__ == "__main__":
    main()
