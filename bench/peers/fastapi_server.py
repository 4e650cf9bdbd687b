"""The common setup embroker replaces: a FastAPI + transformers server that receives images as
base64 strings in JSON over HTTP and answers with their SigLIP embeddings.

    python fastapi_server.py --siglip-dir DIR [--port 8765] [--threads 2]

Endpoints (one uvicorn process, sync handlers in FastAPI's thread pool, as the tutorials do):
    GET  /health                                   -> {"ok": true}
    POST /embed     {"images": ["<base64>", ...]}  -> {"embeddings": [[...], ...], "dims": D,
                                                       "server_us": {...}}
    POST /identity  {"data": "<base64>"}           -> {"embedding": [64 floats], "server_us": N}
/identity is the transport peer of embroker's identity model: it decodes the base64 and hashes
the bytes (SHA-256 expanded to 64 floats), nothing else, so what remains is the cost of HTTP,
JSON and base64. The model is loaded once at start (this is a warm server, like embroker's
workers); weights and image preprocessing come from the same checkpoint directory embroker
reads.
"""
import argparse
import base64
import hashlib
import io
import struct
import time


def build_app(siglip_dir, threads):
    import torch
    from fastapi import FastAPI, HTTPException
    from PIL import Image
    from pydantic import BaseModel
    from transformers import SiglipImageProcessor, SiglipVisionModel

    torch.set_num_threads(threads)
    model = processor = None
    if siglip_dir:
        model = SiglipVisionModel.from_pretrained(siglip_dir, torch_dtype=torch.float32).eval()
        processor = SiglipImageProcessor.from_pretrained(siglip_dir)

    class EmbedRequest(BaseModel):
        images: list[str]

    class IdentityRequest(BaseModel):
        data: str

    app = FastAPI()

    @app.get("/health")
    def health():
        return {"ok": True, "model": bool(model)}

    @app.post("/embed")
    def embed(req: EmbedRequest):
        if model is None:
            raise HTTPException(503, "started without --siglip-dir")
        t0 = time.perf_counter()
        try:
            images = [Image.open(io.BytesIO(base64.b64decode(s))).convert("RGB") for s in req.images]
        except Exception as e:  # a bad input is the client's error
            raise HTTPException(400, f"cannot decode image: {e}")
        t1 = time.perf_counter()
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        t2 = time.perf_counter()
        with torch.inference_mode():
            out = model(pixel_values=pixels).pooler_output
            out = torch.nn.functional.normalize(out, dim=-1)
        t3 = time.perf_counter()
        return {"embeddings": out.tolist(), "dims": out.shape[-1],
                "server_us": {"decode": int((t1 - t0) * 1e6), "preprocess": int((t2 - t1) * 1e6),
                              "infer": int((t3 - t2) * 1e6)}}

    @app.post("/identity")
    def identity(req: IdentityRequest):
        t0 = time.perf_counter()
        data = base64.b64decode(req.data)
        digest = hashlib.sha256(data).digest()
        floats = []
        block = digest
        while len(floats) < 64:  # expand like embroker's identity model: a pure function of the bytes
            block = hashlib.sha256(block).digest()
            floats.extend(v / 2**31 for v in struct.unpack("<8i", block))
        return {"embedding": floats[:64], "server_us": int((time.perf_counter() - t0) * 1e6)}

    return app


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--siglip-dir")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import uvicorn

    app = build_app(args.siglip_dir, args.threads)
    # 127.0.0.1 only: a benchmark peer, never reachable from elsewhere
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
