"""embroker_client — a minimal pure-protocol Python client for embrokerd (docs/protocol.md).

It speaks the wire protocol directly with pyzmq and msgpack: inline inputs only (no shared
memory), so it works against local (ipc://) and remote (tcp://) brokers alike. Enough for
scripts, tests and as a reference for other languages; C programs should use libembroker.

    from embroker_client import Client
    with Client(run_dir="/run/user/1000/embroker") as c:      # or Client("tcp://host:5555")
        print(c.health()["workers"])
        r = c.embed_image(open("cat.jpg", "rb").read(), model="siglip")
        print(r["dims"], r["hash"], r["embedding"][:4])
        s = c.scan(image=open("cat.jpg", "rb").read(), template="shoes", k=5)
        print(s["matches"], s["search_error"], s["timings"])
        c.store(product_id="P1", template="shoes", text="red shoe")   # catalogue row, durable
        print(c.delete("P1"))                                          # rows removed

Requires: pip install pyzmq msgpack.  One Client per thread (a ZeroMQ socket is not thread-safe).
"""

import hashlib
import os
import struct
import time

import msgpack
import zmq

HEADER = b"EMB1C"
REQUEST, REPLY, HEARTBEAT, CANCEL, DISCONNECT = 0x05, 0x06, 0x07, 0x08, 0x09

# eb_status codes (common/eb_status.h; append-only)
STATUS_NAMES = {
    0: "ok", -1: "invalid", -2: "nomem", -3: "io", -4: "protocol", -5: "too_large",
    -6: "not_found", -7: "busy", -8: "timeout", -9: "deadline", -10: "denied", -11: "stale",
    -12: "bounds", -13: "decode", -14: "model", -15: "unavailable", -16: "cancelled",
    -17: "restarted", -18: "worker_lost", -19: "unsupported", -20: "internal", -21: "shutdown",
}


class EmbrokerError(Exception):
    """A request failed as a whole: .code is the eb_status number, .name its short name."""

    def __init__(self, code, message):
        self.code = code
        self.name = STATUS_NAMES.get(code, "unknown")
        super().__init__(f"{self.name} ({code}): {message}")


def content_opts(normalize=True, output_dim=0, instruction=None):
    """The canonical OPTS string of docs/protocol.md "Content hashes" (eb_content_opts)."""
    parts = []
    if output_dim:
        parts.append(f"dim={output_dim}")
    if instruction:
        parts.append("instruction_sha256=" + hashlib.sha256(instruction.encode()).hexdigest())
    if not normalize:
        parts.append("normalize=0")
    return ";".join(parts)


def content_hash(kind, data, width=0, height=0, opts=""):
    """The content hash a worker computes (eb_content_hash): SHA-256 of the canonical header
    and the bytes. kind: "image", "raw_rgb8" or "text" (data: bytes, or str for text)."""
    if isinstance(data, str):
        data = data.encode()
    if kind != "raw_rgb8":
        width = height = 0
    header = (f"embroker-content-v1\nkind={kind}\nw={width}\nh={height}\nopts={opts}\n\n")
    return hashlib.sha256(header.encode() + bytes(data)).digest()


def default_run_dir():
    """Same rule as the C library: $EMBROKER_RUN_DIR, $XDG_RUNTIME_DIR/embroker, /tmp/embroker-UID."""
    if os.environ.get("EMBROKER_RUN_DIR"):
        return os.environ["EMBROKER_RUN_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "embroker")
    return f"/tmp/embroker-{os.getuid()}"


class Client:
    def __init__(self, endpoint=None, run_dir=None, timeout_ms=30000, heartbeat_ms=1000,
                 max_inline_bytes=16 << 20):
        self.endpoint = endpoint or "ipc://" + os.path.join(run_dir or default_run_dir(),
                                                            "frontend.sock")
        self.timeout_ms = timeout_ms
        self.heartbeat_ms = heartbeat_ms
        self.max_inline_bytes = max_inline_bytes
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)
        self.next_id = 1
        self.bid = None          # broker instance id last seen
        self.last_send = time.monotonic()

    # -- plumbing -----------------------------------------------------------------------------
    def close(self):
        try:
            self._send(DISCONNECT, {"reason": "client closing"})
        finally:
            self.sock.close(0)
            self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, command, body, frames=()):
        parts = [HEADER, bytes([command]), msgpack.packb(body, use_bin_type=True), *frames]
        self.sock.send_multipart(parts, copy=False)
        self.last_send = time.monotonic()

    def _request(self, body, frames=()):
        req_id = self.next_id
        self.next_id += 1
        body = dict(body, id=req_id)
        self._send(REQUEST, body, frames)
        deadline = time.monotonic() + self.timeout_ms / 1000.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._send(CANCEL, {"id": req_id})
                raise EmbrokerError(-8, f"no reply within {self.timeout_ms} ms")
            # heartbeat while waiting, as the protocol asks of a client with work in flight
            if time.monotonic() - self.last_send >= self.heartbeat_ms / 1000.0:
                self._send(HEARTBEAT, {})
            if not self.sock.poll(min(left, self.heartbeat_ms / 2000.0) * 1000):
                continue
            parts = self.sock.recv_multipart()
            if len(parts) < 3 or parts[0] != HEADER or len(parts[1]) != 1:
                continue  # not ours to understand; drop
            command, msg = parts[1][0], msgpack.unpackb(parts[2], raw=False)
            bid = msg.get("bid")
            if bid is not None and self.bid is not None and bid != self.bid and command != REPLY:
                self.bid = bid
                raise EmbrokerError(-17, "the broker restarted while the request was in flight")
            self.bid = bid if bid is not None else self.bid
            if command == DISCONNECT:
                raise EmbrokerError(-17, "the broker dropped the connection: "
                                    + str(msg.get("reason", "")))
            if command != REPLY or msg.get("id") != req_id:
                continue  # heartbeat, or a late reply to something we gave up on
            return msg, parts[3:]

    @staticmethod
    def _results(msg, frames):
        if msg.get("status", 0) != 0:
            err = msg.get("error") or {}
            raise EmbrokerError(msg["status"], err.get("message", ""))
        out = []
        for i, r in enumerate(msg.get("results", [])):
            item = {
                "status": STATUS_NAMES.get(r.get("status", 0), "unknown"),
                "dims": r.get("dims", 0),
                "hash": r["hash"].hex() if "hash" in r else None,
                "worker": r.get("worker"),
                "model_rev": r.get("model_rev"),
                "cached": r.get("cached", False),
                "embedding": None,
            }
            if r.get("status", 0) != 0:
                item["error"] = (r.get("error") or {}).get("message", "")
            elif i < len(frames) and r.get("dims"):
                item["embedding"] = list(struct.unpack(f"<{r['dims']}f", frames[i]))
            out.append(item)
        return out, msg.get("timings", {})

    # -- API -----------------------------------------------------------------------------------
    def embed_images(self, images, model="siglip", deadline_ms=0, normalize=True):
        """images: list of bytes (encoded JPEG/PNG/WebP) or (bytes, width, height) raw RGB8.
        Returns (results, timings_us)."""
        inputs, frames = [], []
        for i, img in enumerate(images):
            data, w, h = (img, None, None) if isinstance(img, (bytes, bytearray)) else img
            if len(data) > self.max_inline_bytes:
                raise EmbrokerError(-5, f"input {i}: {len(data)} bytes exceed max_inline_bytes "
                                    f"{self.max_inline_bytes}")
            inp = {"kind": "image", "frame": len(frames)}
            if w is not None:
                inp = {"kind": "raw_rgb8", "width": w, "height": h, "frame": len(frames)}
            inputs.append(inp)
            frames.append(bytes(data))
        body = {"op": "embed_image", "model": model, "inputs": inputs}
        opts = {}
        if deadline_ms:
            opts["deadline_ms"] = deadline_ms
        if not normalize:
            opts["normalize"] = False
        if opts:
            body["options"] = opts
        return self._results(*self._request(body, frames))

    def embed_image(self, data, model="siglip", **kw):
        results, timings = self.embed_images([data], model=model, **kw)
        return dict(results[0], timings=timings)

    def embed_texts(self, texts, model="qwen3", instruction=None):
        body = {"op": "embed_text", "model": model,
                "inputs": [{"kind": "text", "text": t} for t in texts]}
        if instruction:
            body["options"] = {"instruction": instruction}
        return self._results(*self._request(body))

    def embed_text(self, text, model="qwen3", **kw):
        results, timings = self.embed_texts([text], model=model, **kw)
        return dict(results[0], timings=timings)

    def _scan_body(self, op, image, text, template, source_type, product_id, k, store,
                   image_weight, text_weight, return_embedding, image_model, text_model,
                   deadline_ms, bulk, client_hash):
        if image is None and text is None:
            raise EmbrokerError(-1, f"{op} needs an image, a text or both")
        inputs, frames = [], []
        if image is not None:
            data, w, h = (image, None, None) if isinstance(image, (bytes, bytearray)) else image
            if len(data) > self.max_inline_bytes:
                raise EmbrokerError(-5, f"image: {len(data)} bytes exceed max_inline_bytes "
                                    f"{self.max_inline_bytes}")
            inp = {"kind": "image", "frame": 0}
            if w is not None:
                inp = {"kind": "raw_rgb8", "width": w, "height": h, "frame": 0}
            if client_hash:
                inp["hash"] = content_hash(inp["kind"], data, w or 0, h or 0)
            inputs.append(inp)
            frames.append(bytes(data))
        if text is not None:
            inp = {"kind": "text", "text": text}
            if client_hash:
                inp["hash"] = content_hash("text", text)
            inputs.append(inp)
        body = {"op": op, "inputs": inputs}
        if image_model:
            body["model"] = image_model
        if text_model:
            body["text_model"] = text_model
        opts = {}
        filters = {}
        if template:
            filters["template"] = template
        if source_type:
            filters["source_type"] = source_type
        if filters:
            opts["filters"] = filters
        if k:
            opts["k"] = k
        if store:
            opts["store"] = True
        if product_id:
            opts["product_id"] = product_id
        if image_weight is not None:
            opts["image_weight"] = float(image_weight)
        if text_weight is not None:
            opts["text_weight"] = float(text_weight)
        if return_embedding:
            opts["return_embedding"] = True
        if deadline_ms:
            opts["deadline_ms"] = deadline_ms
        if bulk:
            opts["priority"] = "bulk"
        if opts:
            body["options"] = opts
        return body, frames

    @staticmethod
    def _scan_reply(msg, frames):
        results, timings = Client._results(msg, frames)
        out = {
            "matches": [{"product_id": m.get("product_id"), "score": m.get("score"),
                         "template": m.get("template"), "source_type": m.get("source_type")}
                        for m in msg.get("matches", [])],
            "search_error": None,
            "store_id": msg.get("store_id"),
            "results": results,
            "timings": timings,
        }
        se = msg.get("search_error")
        if se:
            code = se.get("code", -20)
            out["search_error"] = {"code": code, "status": STATUS_NAMES.get(code, "unknown"),
                                   "message": se.get("message", "")}
        return out

    def scan(self, image=None, text=None, template=None, source_type=None, k=None, store=False,
             product_id=None, image_weight=None, text_weight=None, return_embedding=False,
             image_model=None, text_model=None, deadline_ms=0, bulk=False, client_hash=True):
        """Top-k catalogue matches for an image (bytes, or (bytes, width, height) raw RGB8)
        and/or a text. Returns {"matches": [...], "search_error": None or {code, status,
        message}, "store_id", "results", "timings"}. With store=True and product_id the scan's
        embedding is also stored (asynchronously). The client's content hashes are sent unless
        client_hash=False, so a repeated scan is answered from the broker's cache."""
        if store and not product_id:
            raise EmbrokerError(-1, "scan with store needs a product_id")
        body, frames = self._scan_body("scan", image, text, template, source_type, product_id,
                                       k, store, image_weight, text_weight, return_embedding,
                                       image_model, text_model, deadline_ms, bulk, client_hash)
        return self._scan_reply(*self._request(body, frames))

    def store(self, product_id, template, image=None, text=None, source_type=None,
              image_model=None, text_model=None, deadline_ms=0, bulk=True, client_hash=True):
        """Embed and upsert the catalogue row of product_id (SourceType source_type, default
        "catalogue"); returns once the broker holds it durably: {"store_id", "results",
        "timings", ...}."""
        if not product_id or not template:
            raise EmbrokerError(-1, "store needs a product_id and a template")
        body, frames = self._scan_body("store", image, text, template, source_type, product_id,
                                       None, False, None, None, False, image_model, text_model,
                                       deadline_ms, bulk, client_hash)
        return self._scan_reply(*self._request(body, frames))

    def delete(self, product_id, template=None):
        """Remove the product's catalogue rows (only those of `template` when given); returns
        how many rows were removed."""
        opts = {"product_id": product_id}
        if template:
            opts["filters"] = {"template": template}
        msg, _ = self._request({"op": "delete", "options": opts})
        if msg.get("status", 0) != 0:
            raise EmbrokerError(msg["status"], (msg.get("error") or {}).get("message", ""))
        return msg.get("deleted", 0)

    def health(self):
        msg, _ = self._request({"op": "health"})
        if msg.get("status", 0) != 0:
            raise EmbrokerError(msg["status"], (msg.get("error") or {}).get("message", ""))
        return msg.get("health", {})


if __name__ == "__main__":
    import json
    import sys

    commands = ("health", "embed-image", "embed-text", "scan", "delete")
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit("usage: embroker_client.py health | embed-image FILE... | embed-text TEXT...\n"
                 "                          | scan [IMAGE] [--text TEXT] [--template T] [-k N]\n"
                 "                          | delete PRODUCT_ID [TEMPLATE]\n"
                 "       (env EMBROKER_RUN_DIR / EMBROKER_BROKER / EMBROKER_MODEL)")
    with Client(endpoint=os.environ.get("EMBROKER_BROKER")) as c:
        model = os.environ.get("EMBROKER_MODEL")
        if sys.argv[1] == "health":
            print(json.dumps(c.health(), default=str))
        elif sys.argv[1] == "embed-image":
            blobs = [open(p, "rb").read() for p in sys.argv[2:]]
            res, t = c.embed_images(blobs, model=model or "siglip")
            print(json.dumps({"results": res, "timings_us": t}))
        elif sys.argv[1] == "scan":
            import argparse
            ap = argparse.ArgumentParser(prog="embroker_client.py scan")
            ap.add_argument("image", nargs="?")
            ap.add_argument("--text")
            ap.add_argument("--template")
            ap.add_argument("--source-type")
            ap.add_argument("-k", type=int)
            a = ap.parse_args(sys.argv[2:])
            img = open(a.image, "rb").read() if a.image else None
            print(json.dumps(c.scan(image=img, text=a.text, template=a.template,
                                    source_type=a.source_type, k=a.k), default=str))
        elif sys.argv[1] == "delete":
            print(json.dumps({"deleted": c.delete(sys.argv[2], *(sys.argv[3:4]))}))
        else:
            res, t = c.embed_texts(sys.argv[2:], model=model or "qwen3")
            print(json.dumps({"results": res, "timings_us": t}))
