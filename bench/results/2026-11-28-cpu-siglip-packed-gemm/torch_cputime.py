"""torch_cputime.py DIR THREADS BATCH SECONDS: PyTorch SigLIP forward, median/min wall and process CPU time."""
import sys, time, statistics, torch
from transformers import SiglipVisionModel
th, b, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
torch.set_num_threads(th)
model = SiglipVisionModel.from_pretrained(sys.argv[1], torch_dtype=torch.float32).eval()
idx = torch.arange(b * 3 * 224 * 224, dtype=torch.int64)
px = (((idx * 2654435761) % (2**32)) % 2001).float().div(1000).sub(1).reshape(b, 3, 224, 224)
with torch.inference_mode():
    model(pixel_values=px)
    tw, tc = [], []; st = time.perf_counter()
    while len(tw) < 200 and (len(tw) < 3 or time.perf_counter() - st < secs):
        w0, c0 = time.perf_counter(), time.process_time()
        model(pixel_values=px).pooler_output
        tw.append(time.perf_counter() - w0); tc.append(time.process_time() - c0)
print(f"torch B={b} threads={th} n={len(tw)} wall median {statistics.median(tw)*1e3:.1f} min {min(tw)*1e3:.1f} ms | cpu median {statistics.median(tc)*1e3:.1f} min {min(tc)*1e3:.1f} ms")
