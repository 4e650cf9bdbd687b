"""Join the CSV files of one bench/run into report.md: machine, versions, tables and the ratios
against the peers measured in the same run. Standard library only."""
import csv
import os
import platform
import subprocess
import sys


def rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def table(rs, title):
    if not rs:
        return f"\n### {title}\n\n(not run)\n"
    cols = list(rs[0].keys())
    out = [f"\n### {title}\n", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rs:
        out.append("| " + " | ".join(r[c] or "-" for c in cols) + " |")
    return "\n".join(out) + "\n"


def cmd(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ms(v, digits=1):
    x = num(v)
    return "-" if x is None else f"{x / 1000:.{digits}f}"


def ratio(a, b, digits=2):
    a, b = num(a), num(b)
    return "-" if a is None or b is None or b == 0 else f"{a / b:.{digits}f}x"


def venv_versions(root):
    """Versions of the peers' Python packages, read from the venvs bench/peers/setup-venv made."""
    out = []
    for name, venv, pkgs in [("FastAPI peer", "var/benchvenv", "torch transformers fastapi uvicorn pillow"),
                             ("infinity-emb peer", "var/benchvenv-infinity", "infinity-emb torch transformers")]:
        py = os.path.join(root, venv, "bin", "python")
        if not os.path.exists(py):
            continue
        code = ("import importlib.metadata as m, sys\n"
                "print(', '.join(p + ' ' + m.version(p) for p in sys.argv[1:]))")
        v = cmd([py, "-c", code] + pkgs.split())
        if v and v != "?":
            out.append(f"- {name} ({venv}): {v}")
    return out


def serving_sections(out):
    """The serving-path scenarios of bench/run-serving: cold vs warm, peers, transport over HTTP,
    load-generator latency distributions, scaling, plots."""
    lines = []
    cw = rows(f"{out}/coldwarm.csv")
    if cw:
        lines.append("\n## Cold vs warm (SigLIP-base on the CPU)\n")
        lines.append("A worker started (model loaded) for every request, against the same request to the "
                     "warm broker. Median ms; `n` is the number of requests behind each median.")
        lines.append(table(cw, "Cold vs warm").replace("\n### Cold vs warm\n", ""))
        scan = rows(f"{out}/scan-e2e.csv")
        warm_scan = next((r for r in scan if r.get("case", "").startswith("scan, cache miss, 1 client")
                          and "backfill" not in r.get("case", "")), None)
        if warm_scan and num(warm_scan.get("search_ms")) is not None:
            lines.append(f"search: embed requests do not search, so the column is empty here; the "
                         f"scan scenario of the same run (below) measured a warm scan's pgvector "
                         f"search at {num(warm_scan['search_ms']):.2f} ms p50, next to "
                         f"{num(warm_scan.get('embedding_ms')):.0f} ms of embedding.\n")
        if os.path.exists(f"{out}/coldwarm.png"):
            lines.append("![cold vs warm](coldwarm.png)\n")

    emb = rows(f"{out}/peers-embroker.csv")
    peers = [("FastAPI + transformers (base64 JSON over HTTP)", rows(f"{out}/peers-fastapi.csv")),
             ("infinity-emb", rows(f"{out}/peers-infinity.csv"))]
    if emb:
        lines.append("\n## Peers: SigLIP-base, same checkpoint, same six photos, same run\n")
        lines.append("Closed loop, one request (one image) in flight per client. Latency in ms; "
                     "p99 is not quoted below 1,000 samples (the `n` column says how many there were). "
                     "Ratios: peer p50 / embroker p50 (higher = embroker faster) and embroker "
                     "throughput / peer throughput.\n")
        hdr = "| clients | embroker n | embroker p50 | embroker p90 | embroker img/s |"
        sep = "|---:|---:|---:|---:|---:|"
        for name, pr in peers:
            if pr:
                short = name.split(" ")[0]
                hdr += f" {short} n | {short} p50 | {short} p90 | {short} img/s | p50 ratio | throughput ratio |"
                sep += "---:|" * 6
        lines += [hdr, sep]
        for e in emb:
            c = e.get("clients")
            line = f"| {num(c):.0f} | {e['n']} | {ms(e['p50_us'])} | {ms(e['p90_us'])} | {num(e['achieved_rps']):.2f} |"
            for name, pr in peers:
                if not pr:
                    continue
                m = next((r for r in pr if num(r["concurrency"]) == num(c)), None)
                if m is None:
                    line += " - |" * 6
                    continue
                line += (f" {m['n']} | {ms(m['p50_us'])} | {ms(m['p90_us'])} | {num(m['req_per_s']):.2f} |"
                         f" {ratio(m['p50_us'], e['p50_us'])} | {ratio(e['achieved_rps'], m['req_per_s'])} |")
            lines.append(line)
        lines.append("")
        st = rows(f"{out}/peers-embroker-stages.csv")
        if st:
            lines.append(table(st, "embroker per-stage breakdown at each concurrency (SigLIP-base)"))
        if os.path.exists(f"{out}/peers.png"):
            lines.append("![peers](peers.png)\n")

    tr, http = rows(f"{out}/transport.csv"), rows(f"{out}/transport-http.csv")
    if tr and http:
        lines.append("\n## Transport: shared memory vs inline ZeroMQ vs HTTP + base64 (identity model)\n")
        lines.append("One client, sequential requests, p50 ms per request. HTTP + base64: the client "
                     "base64-encodes into JSON and posts to the FastAPI peer's /identity, which decodes "
                     "and hashes the bytes (the same work as embroker's identity model).\n")
        lines.append("| size | shm | inline | HTTP + base64 | (of which client encode) | HTTP / shm | inline / shm |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for h in http:
            size = h["case"].split(" ", 1)[1]
            shm = next((r for r in tr if r["case"] == f"shm {size}"), None)
            inl = next((r for r in tr if r["case"] == f"inline {size}"), None)
            s50 = shm["total_p50_us"] if shm else None
            i50 = inl["total_p50_us"] if inl else None
            lines.append(f"| {size} | {ms(s50, 2)} | {ms(i50, 2)} | {ms(h['total_p50_us'], 2)} | "
                         f"{ms(h['encode_p50_us'], 2)} | {ratio(h['total_p50_us'], s50, 1)} | {ratio(i50, s50, 2)} |")
        lines.append("")

    headline, lines = lines, []
    for name, title in [("load-identity", "Load generator: identity model, closed loop"),
                        ("load-mix", "Load generator: 3 images : 1 text, closed loop"),
                        ("scaling-open-identity", "Scaling: open loop to saturation, identity model"),
                        ("scaling-open-tiny", "Scaling: open loop to saturation, siglip-tiny"),
                        ("scaling-workers", "Scaling: workers x max batch, siglip-tiny, 16 clients")]:
        r = rows(f"{out}/{name}.csv")
        if r:
            lines.append(table(r, title))
            md = f"{out}/{name}.md"
            if os.path.exists(md):  # the benchmark's own note on what the row means
                note = open(md).read().rstrip().split("\n\n")[-1]
                if not note.startswith("|"):
                    lines.append(note + "\n")
        if name == "load-identity" and rows(f"{out}/{name}-stages.csv"):
            lines.append(table(rows(f"{out}/{name}-stages.csv"),
                               "Per-stage breakdown (from the replies' timings), identity model"))
        if name == "scaling-open-tiny" and os.path.exists(f"{out}/latency-vs-load.png"):
            lines.append("![latency against offered load](latency-vs-load.png)\n")
        if name == "scaling-workers" and os.path.exists(f"{out}/scaling-workers.png"):
            lines.append("![throughput against workers and batch](scaling-workers.png)\n")
    for name, title in [("scan-e2e", "Quick scan end to end"), ("search", "Search")]:
        md = f"{out}/{name}.md"
        if os.path.exists(md):  # written by embroker-bench with its own notes: included whole
            body = open(md).read().split("\n", 1)[-1].strip()
            lines.append(f"\n## {title} ({name}.md)\n\n{body}\n")
    if os.path.exists(f"{out}/commands.txt"):
        lines.append("\n### Commands (serving scenarios)\n\n```\n" + open(f"{out}/commands.txt").read().rstrip() + "\n```\n")
    return headline, lines


def main():
    out, threads = sys.argv[1], sys.argv[2]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
    gpu = cmd(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"])
    gpu = "none" if gpu in ("", "?") else gpu
    lines = ["# embroker benchmark report", "",
             f"- machine: {cpu}, {os.cpu_count()} cores, {int(mem) // 1024 // 1024} GiB, GPU: {gpu}",
             f"- kernel: {platform.release()}; compiler: {cmd(['gcc', '--version']).splitlines()[0] if cmd(['gcc', '--version']) else '?'}",
             f"- threads for the model benchmarks: {threads} (embroker and PyTorch alike)",
             f"- command: `make bench` (bench/run), results in {out}",
             "- timing rule: one warm-up, then repeats until the time budget is spent (at least 3), median;",
             "  latency distributions come from closed-loop clients; p99 only with >= 1,000 samples.",
             ""]
    headline, rest = serving_sections(out)
    lines += headline
    if headline:
        lines.append("\n## Components\n")
    rt = rows(f"{out}/roundtrip.csv")
    lines.append(table(rt, "Round trip: identity model through broker + worker vs zmq_proxy floor"))
    lines.append(table(rows(f"{out}/transport.csv"), "Transport: shared memory vs inline"))

    sig, sig_peer = rows(f"{out}/siglip-cpu.csv"), rows(f"{out}/siglip-peer.csv")
    lines.append(table(sig, "SigLIP-base on the CPU (embroker)"))
    lines.append(table(sig_peer, "SigLIP-base on the CPU (PyTorch + transformers)"))
    if sig and sig_peer:
        lines.append("\n| batch | embroker ms | PyTorch ms | speed-up |\n|---|---:|---:|---:|")
        for a, b in zip(sig, sig_peer):
            ea, eb = float(a["ms_per_batch"]), float(b["ms_per_batch"])
            lines.append(f"| {a['case'].split()[-1]} | {ea:.1f} | {eb:.1f} | {eb / ea:.2f}x |")
    lines.append(table(rows(f"{out}/coldstart.csv"), "Cold start: worker start to first embedding served through the broker"))

    tok, tok_peer = rows(f"{out}/tokenizer-cpu.csv"), rows(f"{out}/tokenizer-peer.csv")
    lines.append(table(tok + tok_peer, "Tokenizer throughput (one thread)"))
    if tok and tok_peer:
        r = float(tok[0]["MB_per_s"]) / float(tok_peer[0]["MB_per_s"])
        lines.append(f"\nembroker / tokenizers: {r:.1f}x\n")

    q, q_peer = rows(f"{out}/qwen3-cpu.csv"), rows(f"{out}/qwen3-peer.csv")
    lines.append(table(q, "Qwen3-Embedding-0.6B layout on the CPU (embroker)"))
    lines.append(table(q_peer, "Qwen3-Embedding-0.6B layout on the CPU (PyTorch + transformers)"))
    if q and q_peer:
        lines.append("\n| case | embroker ms | PyTorch ms | speed-up |\n|---|---:|---:|---:|")
        for a, b in zip(q, q_peer):
            ea, eb = float(a["ms"]), float(b["ms"])
            lines.append(f"| {a['case'].replace('embroker qwen3 ', '')} | {ea:.1f} | {eb:.1f} | {eb / ea:.2f}x |")
    lines += rest
    lines += ["", "### Versions", "",
              f"- embroker: {cmd(['git', '-C', os.path.dirname(os.path.abspath(__file__)), 'rev-parse', '--short', 'HEAD'])}"
              f" (+ uncommitted changes: {'yes' if cmd(['git', '-C', os.path.dirname(os.path.abspath(__file__)), 'status', '--porcelain']) else 'no'});"
              f" libzmq {cmd(['pkg-config', '--modversion', 'libzmq'])}, OpenBLAS {cmd(['pkg-config', '--modversion', 'openblas'])}",
              f"- python: {platform.python_version()}"]
    lines += venv_versions(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    missing = [f for f in os.listdir(out) if f.endswith(".missing")]
    for m in missing:
        lines.append(f"\n{m}: {open(os.path.join(out, m)).read().strip()}")
    text = "\n".join(lines) + "\n"
    open(f"{out}/report.md", "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
