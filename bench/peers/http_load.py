"""Closed-loop HTTP load against the peers (FastAPI + transformers, infinity-emb), measured the way
embroker-bench load measures embroker: N clients, one request in flight each, latency from the
client's send to the full reply, exact percentiles (p99 only from 1,000 samples). Standard
library only, so it runs in any of the venvs. Writes CSV to stdout.

    python http_load.py embed --url http://127.0.0.1:8765 --images DIR --concurrency 1,4,16
                              [--duration 10] [--warmup 2] [--api fastapi|infinity]
                              [--model NAME] [--label fastapi]
    python http_load.py transport --url http://127.0.0.1:8765 --sizes 102400,1048576
                                  [--requests 20]

Every request carries the image file's bytes as base64 in JSON, built per request (the client's
encoding cost is part of the setup being measured). The transport mode posts random bytes to
/identity and reports the client's base64+JSON encoding time beside the total.
"""
import argparse
import base64
import http.client
import json
import math
import os
import sys
import threading
import time
import urllib.parse


def percentile(sorted_us, q):
    if not sorted_us:
        return float("nan")
    r = max(1, math.ceil(q * len(sorted_us)))
    return sorted_us[r - 1]


def fmt(v):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


class Client:
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.conn = None

    def post(self, path, body):
        for attempt in range(2):  # one reconnect: a server may close an idle keep-alive socket
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        return 0, b""


def embed_body(api, model, image_bytes, mime):
    b64 = base64.b64encode(image_bytes).decode()
    if api == "infinity":
        return "/embeddings_image", json.dumps({"model": model, "input": [f"data:{mime};base64,{b64}"]})
    return "/embed", json.dumps({"images": [b64]})


def load_images(d):
    out = []
    for name in sorted(os.listdir(d)):
        ext = name.rsplit(".", 1)[-1].lower()
        mime = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}.get(ext)
        if mime:
            with open(os.path.join(d, name), "rb") as f:
                out.append((f.read(), mime))
    if not out:
        sys.exit(f"http_load: no .jpg/.png/.webp file in {d}")
    return out


def run_level(args, images, concurrency):
    lat, errors, in_window, lock = [], [0], [0], threading.Lock()
    start = time.perf_counter()
    measure_from, end = start + args.warmup, start + args.warmup + args.duration

    def worker(idx):
        c, i = Client(args.url), idx
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            img, mime = images[i % len(images)]
            i += concurrency
            path, body = embed_body(args.api, args.model, img, mime)
            try:
                status, data = c.post(path, body)
                ok = status == 200
            except Exception:
                ok = False
            t1 = time.perf_counter()
            if ok and measure_from <= t1 < end:
                with lock:
                    in_window[0] += 1  # throughput: completions inside the window
            if t0 >= measure_from:
                with lock:
                    if ok:
                        lat.append(int((t1 - t0) * 1e6))
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    n = len(lat)
    return [f"{args.label} c{concurrency}", concurrency, n, errors[0], fmt(percentile(lat, 0.5)),
            fmt(percentile(lat, 0.9)), fmt(percentile(lat, 0.99) if n >= 1000 else None),
            fmt(lat[-1] if lat else None), f"{in_window[0] / args.duration:.3f}"]


def cmd_embed(args):
    images = load_images(args.images)
    print("case,concurrency,n,errors,p50_us,p90_us,p99_us,max_us,req_per_s")
    for c in [int(x) for x in args.concurrency.split(",")]:
        print(",".join(str(v) for v in run_level(args, images, c)), flush=True)


def cmd_transport(args):
    c = Client(args.url)
    print("case,n,total_p50_us,encode_p50_us,server_p50_us,errors")
    for size in [int(x) for x in args.sizes.split(",")]:
        data = os.urandom(size)
        total, enc, srv, errors = [], [], [], 0
        for i in range(args.requests + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            body = json.dumps({"data": base64.b64encode(data).decode()})
            t1 = time.perf_counter()
            try:
                status, reply = c.post("/identity", body)
                server_us = json.loads(reply)["server_us"] if status == 200 else None
            except Exception:
                status, server_us = 0, None
            t2 = time.perf_counter()
            if i == 0:
                continue
            if status != 200:
                errors += 1
                continue
            total.append(int((t2 - t0) * 1e6))
            enc.append(int((t1 - t0) * 1e6))
            srv.append(server_us)
        for v in (total, enc, srv):
            v.sort()
        print(f"http+base64 {size / 1e6:.2f} MB,{len(total)},{fmt(percentile(total, 0.5))},"
              f"{fmt(percentile(enc, 0.5))},{fmt(percentile(srv, 0.5))},{errors}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["embed", "transport"])
    ap.add_argument("--url", default="http://127.0.0.1:8765")
    ap.add_argument("--images")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--api", choices=["fastapi", "infinity"], default="fastapi")
    ap.add_argument("--model", default="siglip")
    ap.add_argument("--label", default="fastapi")
    ap.add_argument("--sizes", default="102400,1048576,6291456,25165824")
    ap.add_argument("--requests", type=int, default=20)
    args = ap.parse_args()
    cmd_embed(args) if args.mode == "embed" else cmd_transport(args)


if __name__ == "__main__":
    main()
