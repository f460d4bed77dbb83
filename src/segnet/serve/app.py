"""A local web app and HTTP API in front of one segnet model (FastAPI on uvicorn).

FastAPI because it is the Python ecosystem's default for model serving: typed endpoints,
request validation and an OpenAPI description (``/docs``, ``/openapi.json``) for free, and
it runs on uvicorn, a small ASGI server. The model runs in one worker thread behind a
``DynamicBatcher``; the event loop only decodes uploads and encodes answers.

Endpoints: ``GET /`` (the page), ``POST /segment`` (an image in, a label map, overlay,
class shares and timings out), ``GET /health``, ``GET /models``, ``GET /example.png``.
"""

# No "from __future__ import annotations" here: FastAPI reads the endpoint annotations at run time.

import asyncio
import base64
import io
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data.io import rgb_tensor
from ..engine.engines import ONE_IMAGE_AT_A_TIME
from ..engine.inference import LoadedModel
from ..models import smallest_input
from ..report import overlay, palette_png, uncertainty_png
from .batching import DynamicBatcher, QueueFull

MAX_UPLOAD_MB = 10.0
# decoded size limit, checked from the image header before decoding: a 291 kB PNG can hold
# 10000x10000 pixels (6 GB to decode and segment); 40 MP is 230 CamVid frames
MAX_MEGAPIXELS = 40.0


class BadUpload(Exception):
    """An upload the server cannot segment; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, minimum: int, max_megapixels: float = MAX_MEGAPIXELS) -> torch.Tensor:
    """Uploaded bytes -> uint8 ``(3, H, W)``; ``BadUpload`` saying what is wrong otherwise.
    The pixel count is read from the header and refused (413) before anything is decoded."""
    if not data:
        raise BadUpload(400, "the upload is empty; send an image file in the form field 'image'")
    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height = picture.size
            if width * height > max_megapixels * 1e6:
                raise BadUpload(413, f"the image is {width}x{height} pixels ({width * height / 1e6:.0f} MP); this "
                                     f"server takes at most {max_megapixels:g} MP (serve --max-megapixels)")
            picture.load()
            image = rgb_tensor(picture)
    except Image.DecompressionBombError as error:
        raise BadUpload(413, f"the image has too many pixels ({error})") from None
    except UnidentifiedImageError:
        raise BadUpload(415, "not an image (PNG, JPEG, BMP, TIFF or WebP expected)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadUpload(400, f"the image is truncated or damaged ({error})") from None
    if min(image.shape[1:]) < minimum:
        raise BadUpload(422, f"the image is {image.shape[2]}x{image.shape[1]} pixels; this model needs at least "
                             f"{minimum}x{minimum}")
    return image


def _png(picture: Image.Image) -> bytes:
    # zlib level 1: a 360x480 overlay encodes in 24 ms instead of 83 ms (level 6) for 13% more bytes
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _ready_to_serve(loaded: LoadedModel, amp: str, max_batch: int | None) -> int:
    """Build ``loaded``'s engine for open-ended work (auto may compile) and return the batch
    limit: ``max_batch``, or 8, or 1 for an engine that runs a batch one image after another
    anyway (``ONE_IMAGE_AT_A_TIME``: nnpack; pairing requests for it only made each pair wait for the other:
    SegNet-Basic at 4 clients on a 2-core EPYC answered 2.66-3.31 requests/s in batches of
    two against 3.60-4.04 one by one, docs/performance.md). A compiled engine is compiled
    now, for one image and for a batch (torch.compile then treats the batch size as dynamic,
    so larger batches reuse it): otherwise the first batch of two waits seconds for a second
    compile (serve benchmark)."""
    loaded.ready(amp, images=None)
    if max_batch is None:
        max_batch = 1 if loaded.runtime["engine"] in ONE_IMAGE_AT_A_TIME else 8
    if loaded.runtime["engine"] == "compile" and loaded.input_size:
        blank = torch.zeros(3, *loaded.input_size, dtype=torch.uint8)
        for size in (1, 2) if max_batch > 1 else (1,):
            loaded.segment_batch([blank] * size, 0, amp)
    return max_batch


def create_app(loaded: LoadedModel, model_name: str | None = None, mc_samples: int = 0, amp: str = "auto",
               max_batch: int | None = None, max_wait_ms: float = 10.0, max_queue: int = 32,
               max_upload_mb: float = MAX_UPLOAD_MB, example: str | Path | None = None,
               max_megapixels: float = MAX_MEGAPIXELS):
    """The FastAPI app serving ``loaded`` (``engine.inference.load_model``), shown as
    ``model_name`` (default: the loaded model's). ``mc_samples`` > 0 (Bayesian models) adds
    an uncertainty map; ``example``: an image the page can try without an upload. Uploads
    over ``max_upload_mb`` (counted while the body arrives) or ``max_megapixels`` get 413."""
    from fastapi import FastAPI, File, Query, Request, UploadFile
    from fastapi.responses import HTMLResponse, Response

    model_name = model_name or loaded.name
    max_batch = _ready_to_serve(loaded, amp, max_batch)
    minimum = 8 if loaded.input_size else smallest_input(loaded.model)

    def run_batch(images: list[torch.Tensor]) -> list:
        return loaded.segment_batch(images, mc_samples, amp)

    batcher = DynamicBatcher(run_batch, max_batch, max_wait_ms / 1000, max_queue)
    limit = int(max_upload_mb * 1e6)
    info = _served(loaded, model_name, mc_samples > 0, {"max_batch": max_batch, "max_wait_ms": max_wait_ms,
                   "max_queue": max_queue}, {"max_upload_mb": max_upload_mb, "max_megapixels": max_megapixels})

    app = FastAPI(title="segnet", summary=f"Semantic segmentation with {model_name}",
                  description="POST an image to /segment; the page at / does it in a browser.")
    app.state.batcher = batcher  # the caller closes it when the server stops (see serve)
    app.add_middleware(BodyLimit, limit=limit + 65536)  # the form's own bytes on top of the file

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("segnet.serve").joinpath("page.html").read_text()

    @app.get("/health")
    def health() -> dict:
        """Liveness, and how many images wait for the model."""
        return {"status": "ok", "model": model_name, "waiting": batcher.waiting, "batches_run": batcher.batches_run}

    @app.get("/models")
    def models() -> dict:
        """The model served: classes with their colours, input size, device, batching limits."""
        return {"models": [info]}

    @app.get("/example.png", include_in_schema=False)
    def example_image() -> Response:
        if example is None or not Path(example).is_file():
            return _error(404, "no example image is configured")
        return Response(_png(Image.open(example).convert("RGB")), media_type="image/png")

    @app.post("/segment", responses={400: {}, 413: {}, 415: {}, 422: {}, 503: {}})
    async def segment(request: Request, image: UploadFile = File(..., description="the image to segment"),
                      output: str = Query("json", pattern="^(json|labels|overlay)$",
                                          description="json: everything (PNGs base64); labels: the label map PNG "
                                          "(values are class ids); overlay: the colour overlay PNG")) -> Response:
        """Segment one image. JSON answer: class shares, timings (queue, inference, batch size)
        and the label map, overlay and (Bayesian models) uncertainty as base64 PNGs."""
        start = time.perf_counter()
        declared = int(request.headers.get("content-length") or 0)
        if declared > limit + 65536:
            return _error(413, f"the upload is {declared / 1e6:.1f} MB; the limit is {max_upload_mb:g} MB")
        data = await image.read(limit + 1)
        if len(data) > limit:
            return _error(413, f"the upload is over the {max_upload_mb:g} MB limit")
        try:
            decode_start = time.perf_counter()
            pixels = decode_upload(data, minimum, max_megapixels)
            decode_ms = (time.perf_counter() - decode_start) * 1000
            future = batcher.submit(pixels)
        except BadUpload as bad:
            return _error(bad.status, f"{image.filename}: {bad}")
        except QueueFull as full:
            return _error(503, f"the server is busy ({full}); try again shortly", {"Retry-After": "1"})
        try:
            (labels, variance), timing = await asyncio.wrap_future(future)
        except ValueError as failed:  # e.g. the model refuses the size
            return _error(422, f"{image.filename}: {failed}")
        timing = {"decode_ms": decode_ms, **timing}
        return _answer(pixels, labels, variance, loaded.meta, image.filename, model_name, timing, output, start)

    return app


class BodyLimit:
    """ASGI middleware: counts a request's body as it arrives and answers 413 the moment it
    passes ``limit``, so an upload without Content-Length (chunked) is never read, or
    spooled to disk, beyond the limit."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen, answered = 0, False

        async def counted_receive():
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request" and not answered:
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    answered = True
                    await _error(413, f"the upload is over the {self.limit / 1e6:.1f} MB limit (serve "
                                      "--max-upload-mb)")(scope, receive, send)
                    return {"type": "http.disconnect"}  # the app stops reading; nothing more is taken
            return message

        async def guarded_send(message):
            if not answered:  # once 413 is sent, the app's own answer is dropped
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _served(loaded: LoadedModel, name: str, uncertainty: bool, batching: dict, limits: dict) -> dict:
    """What GET /models says about the model served: classes, input size, engine, limits."""
    return {"name": name, "source": loaded.source, "classes": _classes(loaded.meta),
            "input_size": list(loaded.input_size) if loaded.input_size else None, "uncertainty": uncertainty,
            "device": str(loaded.device), "engine": loaded.runtime["engine"], "precision": loaded.runtime["precision"],
            "tta": loaded.tta.describe() if loaded.tta else "off", "batching": batching, **limits}


def _error(status: int, message: str, headers: dict | None = None):
    """A JSON error answer: what is wrong, and the status."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def _classes(meta) -> list[dict]:
    return [{"id": i, "name": name, "color": list(color)} for i, (name, color) in
            enumerate(zip(meta.class_names, meta.palette))]


def _answer(pixels: torch.Tensor, labels: torch.Tensor, variance, meta, filename: str, model_name: str,
            timing: dict, output: str, start: float):
    """The answer to /segment: a PNG (``output`` labels or overlay) or the JSON with everything.
    ``timing`` gains the PNG encoding's time and the total since ``start``."""
    from fastapi.responses import JSONResponse, Response

    encode_start = time.perf_counter()
    labels_np = labels.cpu().numpy().astype(np.uint8)
    pngs = {}
    if output in ("overlay", "json"):
        pngs["overlay"] = _png(overlay(pixels.permute(1, 2, 0).numpy(), labels_np, meta))
    if output in ("labels", "json"):
        pngs["labels"] = _png(palette_png(labels_np, meta))
    if output == "json" and variance is not None:
        pngs["uncertainty"] = _png(uncertainty_png(variance.cpu().numpy()))
    now = time.perf_counter()
    timing = {**timing, "encode_ms": (now - encode_start) * 1000, "total_ms": (now - start) * 1000}
    headers = {f"X-Segnet-{k.replace('_', '-')}": f"{v:.1f}" if isinstance(v, float) else str(v)
               for k, v in timing.items()}
    if output != "json":
        return Response(pngs[output], media_type="image/png", headers=headers)
    counts = np.bincount(labels_np.ravel(), minlength=meta.num_classes)[: meta.num_classes]
    shares = [{**entry, "share": float(count / labels_np.size)} for entry, count in zip(_classes(meta), counts)]
    encoded = {f"{name}_png": base64.b64encode(data).decode() for name, data in pngs.items()}
    return JSONResponse({
        "file": filename, "width": int(labels_np.shape[1]), "height": int(labels_np.shape[0]),
        "classes": shares, "timing": timing, "model": model_name, "uncertainty_png": None, **encoded,
    }, headers=headers)


def run_server(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``app`` with uvicorn until Ctrl-C, then stop its batcher. The port is checked
    first, so a port in use is a one-line error rather than a server that never starts."""
    import socket

    import uvicorn

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ValueError(f"--host {host} --port {port}: cannot listen there ({error.strerror}); "
                             "choose another --port") from None
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        app.state.batcher.close()
