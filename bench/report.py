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
    missing = [f for f in os.listdir(out) if f.endswith(".missing")]
    for m in missing:
        lines.append(f"\n{m}: {open(os.path.join(out, m)).read().strip()}")
    text = "\n".join(lines) + "\n"
    open(f"{out}/report.md", "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
