"""The HTTP API: a FastAPI app around one Segmenter.

Routes: ``POST /v1/segment`` (an image, as a multipart field or the raw body -> an indexed PNG mask,
or with ``?format=json`` the class areas and a run-length-encoded mask), ``POST /v1/preview`` (an image
sent the same way -> the image as the server decodes it, 8 bits per channel, as PNG: what the web page
draws for a format the browser cannot, such as TIFF), ``GET /v1/model`` (classes, palette, model card),
``GET /healthz`` and ``GET /`` (the web page).

Bad input is the client's fault and gets a 4xx with ``{"error": ...}``: 415 for what is not an image,
400 for a truncated or corrupt one, 413 for a body over ``max_body_bytes``, an image over ``max_pixels``
or, with a memory plan, one on which the network would compute more than the plan's
``max_computed_pixels`` (a thin image padded to the model's smallest window); all checked from the header,
before decoding: decompression bombs never reach memory. At most ``max_concurrent`` decodes and inferences
run at once and ``max_queue`` wait; beyond that, 503 with Retry-After. A client that leaves during its
upload costs one line in the log.
"""

from __future__ import annotations

import asyncio
import io
import logging
import warnings
from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image as PILImage
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from pixelwise.data.base import image_header, read_pixels
from pixelwise.infer.inputs import to_uint8
from pixelwise.infer.memory import MemoryPlan, layout_for
from pixelwise.infer.segmenter import Segmenter
from pixelwise.infer.writers import class_areas, mask_image

MEGABYTE = 1 << 20
T = TypeVar("T")
# uvicorn's own log: a line there reads like the server's other lines and follows its --log-level.
log = logging.getLogger("uvicorn.error")


class ClientError(HTTPException):
    """A 4xx the client can fix; ``headers`` carry Retry-After for 503."""


class InferenceSlots:
    """At most ``running`` inferences at once and ``waiting`` requests more, the rest turned away with 503.

    A request counts from the moment its upload starts (``with slots:``), not once it is read: an upload in
    flight holds memory as a queued one does, so the queue bounds both. ``async with slots.running:`` then
    waits for an inference slot. Only touched from the event loop, so a plain counter needs no lock.
    """

    def __init__(self, running: int, waiting: int) -> None:
        self.capacity = running + waiting
        self.admitted = 0
        self.running = asyncio.Semaphore(running)

    def __enter__(self) -> None:
        if self.admitted >= self.capacity:
            raise ClientError(503, "server busy: too many images in flight, retry shortly", {"Retry-After": "1"})
        self.admitted += 1

    def __exit__(self, *exc_info: Any) -> None:
        self.admitted -= 1


def png_bytes(image: PILImage.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_length_encode(labels: np.ndarray) -> dict[str, Any]:
    """(H, W) labels -> {"values": [...], "counts": [...]}: runs over the row-major flattened map."""
    flat = labels.ravel()
    starts = np.flatnonzero(np.concatenate([[True], flat[1:] != flat[:-1]]))
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return {"order": "row-major", "size": list(labels.shape), "values": flat[starts].tolist(),
            "counts": counts.tolist()}


def check_header(data: bytes, max_pixels: int) -> tuple[int, int]:
    """The image's (height, width), or a refusal of bytes that are not an image or an image over
    ``max_pixels``, from the header alone: cheap, and nothing is decoded (a decompression bomb never reaches
    memory)."""
    if not data:
        raise ClientError(400, "empty upload: send an image file")
    limit = (f"the limit is {max_pixels} pixels (pixelwise serve --max-pixels, or a larger --max-request-mb, "
             "raises it)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # the limit below decides
            (height, width), orientation = image_header(data)
    except PILImage.DecompressionBombError as error:
        raise ClientError(413, f"image too large: {error}; {limit}") from error
    except PILImage.UnidentifiedImageError as error:
        raise ClientError(415, "not an image pixelwise can read (send PNG, JPEG, BMP, TIFF or WebP)") from error
    except Exception as error:  # a known format whose header is cut off or damaged
        raise ClientError(400, f"image cannot be decoded (truncated or corrupt): {error}") from error
    if orientation >= 5:  # EXIF orientations 5-8 turn the image a quarter: it runs with its sides swapped
        height, width = width, height
    if width * height > max_pixels:
        raise ClientError(413, f"image has {width}x{height} = {width * height} pixels; {limit}")
    return height, width


def check_computed(height: int, width: int, segmenter: Segmenter, max_computed_pixels: int) -> None:
    """Refuse an image on which the network would compute more than ``max_computed_pixels`` input pixels,
    padding included (``pixelwise.infer.memory.layout_for``): a thin image runs windows of the model's
    smallest input, many times its own area."""
    layout = layout_for(height, width, segmenter)
    if layout.computed_pixels > max_computed_pixels:
        rows, columns = layout.window
        raise ClientError(413, f"image of {width}x{height} pixels would have the network compute "
                               f"{layout.computed_pixels} pixels ({layout.runs} windows of {columns}x{rows}, padding "
                               f"included); the limit is {max_computed_pixels} (a larger pixelwise serve "
                               "--max-request-mb or --max-pixels raises it)")


def decode_image(data: bytes) -> np.ndarray:
    """Checked bytes -> the image's pixels at their true bit depth (``pixelwise.data.base.read_pixels``), or a
    ClientError saying what is wrong with them."""
    try:
        return read_pixels(data)  # as the user sees it: turned by its EXIF orientation
    except ValueError as error:  # a valid file pixelwise does not read (signed or out-of-range values)
        raise ClientError(415, f"unsupported image: {error}") from error
    except Exception as error:  # Pillow, pypng and tifffile raise many types for damaged files
        raise ClientError(400, f"image cannot be decoded (truncated or corrupt): {error}") from error


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it passes ``limit`` bytes (or says it will)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ClientError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ClientError(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect as error:  # an everyday event, not a server fault: one line, no traceback
        log.info("client %s left during its upload, after %d of %s bytes", client_address(request), size,
                 declared or "unknown")
        raise ClientError(499, "client disconnected during the upload") from error
    return b"".join(chunks)


def client_address(request: Request) -> str:
    """host:port of the request's client, as uvicorn's access log writes it."""
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


async def image_bytes(request: Request, body: bytes, limit: int) -> bytes:
    """The uploaded file: the first file of a multipart form, or the raw body for any other content type."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay():
        yield body
        yield b""

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_part_size=limit).parse()
    except MultiPartException as error:
        raise ClientError(400, f"malformed multipart form: {error.message}") from error
    upload = form.get("image") or next((v for v in form.values() if isinstance(v, UploadFile)), None)
    if not isinstance(upload, UploadFile):
        raise ClientError(400, "multipart form has no file: send the image in a field named 'image'")
    return await upload.read()


def create_app(
    segmenter: Segmenter,
    *,
    max_pixels: int = 40_000_000,
    max_body_bytes: int = 32 * MEGABYTE,
    max_concurrent: int = 2,
    max_queue: int = 64,
    memory: MemoryPlan | None = None,
) -> FastAPI:
    """The FastAPI app serving ``segmenter`` with the given input limits.

    With a ``memory`` plan (``pixelwise.infer.memory.plan_memory``, what ``pixelwise serve`` makes) the
    pixel and concurrency limits are the plan's, images too costly to run whole run window by window, an
    image the network would compute more than ``max_computed_pixels`` for is refused, and ``GET /v1/model``
    reports the plan.
    """
    if memory is not None:
        max_pixels, max_concurrent = memory.max_pixels, memory.max_concurrent
        segmenter.whole_up_to, segmenter.grid_padding = memory.whole_up_to, memory.grid_padding
    app = FastAPI(title="pixelwise", summary="semantic segmentation")
    slots = InferenceSlots(max_concurrent, max_queue)
    page = resources.files("pixelwise.serve").joinpath("static/index.html").read_text()

    # Starlette's own errors (404 for an unknown path, 405 for a wrong method) get the same {"error": ...} body.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": error.detail}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model_card() -> dict[str, Any]:
        card = segmenter.card
        # The card as a client needs it; not the training config or the data's paths on the server's disk.
        stored = {key: value for key, value in card.to_dict().items()
                  if key not in ("format", "version", "train_config", "data")}
        stored["data"] = {"name": card.data.name} if card.data is not None else None
        return {
            "name": card.name,
            "num_classes": segmenter.num_classes,
            "class_names": segmenter.class_names,
            "palette": segmenter.palette[: segmenter.num_classes],
            "card": {
                **stored,
                "mode": segmenter.mode,
                # What runs the network here: bf16 means OpenVINO or the fast path chose the AMX units.
                "backend": segmenter.backend,
                "precision": segmenter.precision,
                "scales": list(segmenter.scales),
                "flip": segmenter.flip,
                # What this server applies: the stored statistics for the model's input channels.
                "normalization": {"mean": segmenter.mean, "std": segmenter.std},
                "limits": {"max_pixels": max_pixels, "max_body_bytes": max_body_bytes,
                           "max_concurrent": max_concurrent, "max_queue": max_queue,
                           # Waiting requests hold only their upload; running ones their request budget.
                           "queued_bytes": max_queue * max_body_bytes,
                           "memory": memory.as_dict() if memory is not None else None},
            },
        }

    async def checked_upload(request: Request) -> tuple[bytes, int, int]:
        """The uploaded file's bytes and its image's (height, width), checked from the header."""
        body = await read_body(request, max_body_bytes)
        data = await image_bytes(request, body, max_body_bytes)
        return (data, *check_header(data, max_pixels))

    async def when_admitted(request: Request, work: Callable[[], T]) -> T | None:
        """``work()`` in a worker thread once a slot is free; None when the client left while it waited."""
        # The body is read, so the next message can only be the client leaving; listening for it also lets
        # the server read the socket again (uvicorn pauses reading a large upload), which is how it learns.
        left = asyncio.ensure_future(request.receive())
        try:
            async with slots.running:
                if left.done() and left.result().get("type") == "http.disconnect":
                    return None  # spend the slot on someone who is still there
                # Decoded only now, in a worker thread: a queued request holds just its (bounded) upload, and
                # the event loop stays free to notice clients that leave.
                return await run_in_threadpool(work)
        finally:
            left.cancel()

    @app.post("/v1/segment")
    async def segment(request: Request, format: str = "png") -> Response:
        if format not in ("png", "json"):
            raise ClientError(400, f"format must be 'png' or 'json', got {format!r}")
        with slots:  # before the upload is read: uploads in flight count against the queue
            data, height, width = await checked_upload(request)
            if memory is not None:
                check_computed(height, width, segmenter, memory.max_computed_pixels)
            labels = await when_admitted(request, lambda: segmenter.predict(decode_image(data)))
        if labels is None:
            return Response(status_code=499)
        if format == "png":
            return Response(png_bytes(mask_image(labels, segmenter.palette)), media_type="image/png")
        areas = class_areas(labels, segmenter.num_classes)
        return JSONResponse({
            "width": int(labels.shape[1]),
            "height": int(labels.shape[0]),
            "classes": [
                {"index": i, "name": name, "pixels": int(areas[i]), "fraction": float(areas[i] / labels.size)}
                for i, name in enumerate(segmenter.class_names)
            ],
            "mask": run_length_encode(labels),
        })

    @app.post("/v1/preview")
    async def preview(request: Request) -> Response:
        with slots:
            data, _, _ = await checked_upload(request)
            rendering = await when_admitted(request,
                                            lambda: png_bytes(PILImage.fromarray(to_uint8(decode_image(data)))))
        if rendering is None:
            return Response(status_code=499)
        return Response(rendering, media_type="image/png")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    return app
