"""The local web page and JSON API of ``changecap serve`` (extra ``serve``: FastAPI, uvicorn, fastapi-offline).

* ``GET /`` — one static page, no external assets: upload two images or pick a bundled SynthCC sample, see both
  dates side by side, the caption, the change probability and the mask overlay (models with a CD head).
* ``POST /api/caption`` — multipart fields ``before`` and ``after`` → ``{"caption", "change_probability",
  "mask_png", "attention"}`` (``mask_png``: base64 PNG, 255 = changed, at the images' size; null without a CD head).
  ``?attention=true`` (models that declare ``attention_maps``) fills ``attention``: ``{"words", "grid", "maps",
  "box"}``, per word of the caption the decoder's cross-attention over a ``grid`` × ``grid`` grid (row-major, each
  summing to 1, 4 decimals) covering the ``box`` ``[left, top, right, bottom]`` of the after image in pixels; it is
  null otherwise, and asking a model without attention maps for them is a 400.
* ``GET /api/health`` — the model, its architecture and declared capabilities (``models/contract.py``), whether it
  is ready and the limits; ``GET /api/samples`` and
  ``GET /api/samples/{index}/{before|after}.png`` — the bundled samples (rendered by ``changecap.synth`` at start).
* ``GET /docs`` — Swagger UI from the JavaScript and CSS that fastapi-offline ships (served from this server; no
  CDN, no third-party favicon), over ``GET /openapi.json``.

The model is loaded once. Decoding, the forward pass and the mask's PNG run in a worker thread, one request at a
time (a lock: the model is not re-entrant and a CPU has no spare cores for a second forward pass), so the event loop
keeps answering health, page and docs requests meanwhile. Uploads are read as every command reads images
(:func:`changecap.data.image_io.read_rgb_bytes`: EXIF orientation applied, the same band rules, TIFFs with
tifffile). Bad input is a 4xx with a message naming the upload's field and file name, never a 500:

* 413 past the upload limit (``max_upload_mb`` per request, checked on the declared length and again on the bytes
  read). The rest of an oversized body is read and discarded (up to ``DRAIN_BYTES`` more) before the answer, so a
  client that sends its body without waiting for ``Expect: 100-continue`` reads the 413 instead of a reset
  connection; the connection is then closed.
* 413 for an image of more than ``max_image_pixels`` pixels, decided from its header before any pixel is decoded
  (a PNG declaring 30000×30000 pixels in a few hundred bytes is refused without allocating them). Larger rasters
  are for ``changecap scene``.
* 400 for a missing field or an unreadable image, 422 for dates of different sizes.

A client that disconnects mid-upload is logged as one warning line (logger ``changecap.serve``). Requests whose
``Host`` header names another host are refused (:mod:`changecap.serve.hosts`).
"""

import base64
import io
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from changecap.errors import ChangeCapError, DataError

SAMPLE_SIZE = 128
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # per image; the models see 224–256 px, so this is ample for a pair
DRAIN_BYTES = 64 * 1024 * 1024  # how much of an oversized body is read and discarded so the client sees the 413

log = logging.getLogger("changecap.serve")


@dataclass
class Sample:
    name: str
    before: bytes  # PNG
    after: bytes


def render_samples(count: int = 4, seed: int = 2024) -> list[Sample]:
    """A few SynthCC pairs (changed and unchanged, alternating) rendered in memory as PNG bytes."""
    from changecap.synth.generate import render_pair

    samples = []
    for i in range(count):
        pair = render_pair(seed, i, changed=i % 2 == 0, size=SAMPLE_SIZE)
        pngs = []
        for img in (pair.before, pair.after):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append(buf.getvalue())
        samples.append(Sample(f"SynthCC sample {i + 1} ({'changed' if i % 2 == 0 else 'unchanged'})", *pngs))
    return samples


class HTTPProblem(Exception):
    """A client error to answer with ``status`` and ``detail`` (``close``: close the connection afterwards)."""

    def __init__(self, status: int, detail: str, close: bool = False) -> None:
        super().__init__(detail)
        self.status, self.detail, self.close = status, detail, close


def upload_label(field: str, filename: str | None) -> str:
    """``before (scene 1.png)``: how messages name an upload (the file name on one printable line, shortened)."""
    name = " ".join("".join(c if c.isprintable() else " " for c in filename or "").split())
    if not name:
        return field
    return f"{field} ({name if len(name) <= 80 else name[:77] + '...'})"


def _reason(e: BaseException) -> str:
    """A parser's message on one line, without the in-memory buffer's repr some libraries put in them."""
    text = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the upload", " ".join(str(e).split()))
    return text or type(e).__name__


def _too_large(label: str, what: str, pixels: int, max_pixels: int) -> HTTPProblem:
    """413 for an image past ``max_pixels`` (or past Pillow's own decompression-bomb bound, when that is lower)."""
    if pixels <= max_pixels:
        bound = f"Pillow's decompression-bomb limit of {pillow_bomb_bound():,} pixels"
    else:
        bound = f"the limit of {max_pixels:,} pixels per image (--max-image-pixels)"
    return HTTPProblem(413, f"{label}: {what} exceeds {bound}; caption large rasters with 'changecap scene'")


def pillow_bomb_bound() -> int | None:
    """The pixel count past which Pillow itself refuses to open an image (None: switched off in this process)."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * int(Image.MAX_IMAGE_PIXELS)


def read_upload(data: bytes, field: str, filename: str | None, max_pixels: int) -> np.ndarray:
    """An upload → upright uint8 RGB [H, W, 3] through :func:`changecap.data.image_io.read_rgb_bytes` (the readers
    of every other command: EXIF orientation, band rules, TIFF). The size is checked from the header before any pixel
    is decoded: more than ``max_pixels`` (or Pillow's own bomb bound, when lower) is a 413; anything else wrong with
    the file a 400 naming the upload."""
    from changecap.data.image_io import ImageTooLarge, read_rgb_bytes

    label = upload_label(field, filename)
    if not data:
        raise HTTPProblem(400, f"{label}: empty upload")
    pillow = pillow_bomb_bound()
    bound = max_pixels if pillow is None else min(max_pixels, pillow)
    try:
        # the file name picks the reader (its suffix: TIFF or not); the messages name the upload by its label
        return read_rgb_bytes(data, filename or field, max_pixels=bound)
    except ImageTooLarge as e:
        pixels = e.width * e.height
        raise _too_large(label, f"{e.width}×{e.height} image ({pixels:,} pixels)", pixels, max_pixels) from None
    except DataError as e:
        raise HTTPProblem(400, f"{label}: {e.message}") from None


def mask_png_base64(mask: np.ndarray | None) -> str | None:
    from changecap.data.image_io import change_mask_image

    if mask is None:
        return None
    buf = io.BytesIO()
    change_mask_image(mask).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def create_app(
    captioner: Any,
    model_name: str,
    *,
    max_upload_mb: float = 32.0,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    host: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] | list[str] = (),
    samples: list[Sample] | None = None,
) -> Any:
    """The FastAPI application serving ``captioner`` (a :class:`~changecap.inference.ChangeCaptioner`).

    ``host`` is the address the server is bound to and ``allowed_hosts`` further names it answers to (``*``: any);
    requests with another ``Host`` header get 400 (:mod:`changecap.serve.hosts`).

    FastAPI reads the endpoints' annotations at definition time, which is why this module does without
    ``from __future__ import annotations`` (the endpoints' types are imported inside this function)."""
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from fastapi_offline import FastAPIOffline
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect

    from changecap.serve.hosts import HostCheck
    from changecap.serve.page import PAGE

    if max_image_pixels <= 0:
        raise ValueError(f"max_image_pixels must be > 0, got {max_image_pixels}")
    limit = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()
    bundled = render_samples() if samples is None else samples

    class Attention(BaseModel):
        words: list[str]
        grid: int
        maps: list[list[float]]
        box: list[int]

    class Caption(BaseModel):
        caption: str | None
        change_probability: float | None
        mask_png: str | None
        attention: Attention | None = None

    class Health(BaseModel):
        status: str
        model: str
        architecture: str | None
        capabilities: list[str]
        predicts_masks: bool
        max_upload_mb: float
        max_image_pixels: int

    # /docs from local copies of Swagger UI's files; no favicon ("data:," asks the browser for none) and no
    # validator badge (Swagger UI would send the schema's address to an outside validator)
    app = FastAPIOffline(title="changecap", description="Remote sensing change captioning of image pairs.",
                         version="1", redoc_url=None, favicon_url="data:,",
                         swagger_ui_parameters={"validatorUrl": None})  # fmt: skip
    app.add_middleware(HostCheck, bound=host, allowed=tuple(allowed_hosts))

    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        headers = {"Connection": "close"} if exc.close else None
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return PAGE

    # the cheap endpoints are coroutines: they never wait for a worker thread while captioning keeps those busy
    @app.get("/api/health", response_model=Health)
    async def health() -> Health:
        can = captioner.capabilities
        return Health(status="ok", model=model_name, architecture=captioner.architecture,
                      capabilities=can.names(), predicts_masks=can.change_mask, max_upload_mb=max_upload_mb,
                      max_image_pixels=max_image_pixels)  # fmt: skip

    @app.get("/api/samples")
    async def sample_list() -> list[dict[str, Any]]:
        return [{"index": i, "name": s.name} for i, s in enumerate(bundled)]

    @app.get("/api/samples/{index}/{date}.png", responses={200: {"content": {"image/png": {}}}})
    async def sample_image(index: int, date: str) -> Response:
        if not 0 <= index < len(bundled) or date not in ("before", "after"):
            raise HTTPProblem(404, f"no sample {index}/{date}")
        return Response(getattr(bundled[index], date), media_type="image/png")  # the sample's field of that date

    def over_limit(declared: int | None) -> HTTPProblem:
        size = f"upload of {declared} bytes" if declared is not None else "upload"
        return HTTPProblem(413, f"{size} exceeds the limit of {max_upload_mb:g} MB (--max-upload-mb)", close=True)

    async def read_body(request: Request) -> bytes | None:
        """The request body, at most ``limit`` bytes; None when the client went away before sending it all."""
        text = request.headers.get("content-length", "")
        declared = int(text) if text.isdigit() else None
        too_big = declared is not None and declared > limit
        if too_big and (request.headers.get("expect", "").lower() == "100-continue" or declared > limit + DRAIN_BYTES):
            raise over_limit(declared)  # the client waits for our word before sending, or sends more than we drain
        body, received = bytearray(), 0
        try:
            async for chunk in request.stream():  # counted as it arrives: a missing or false length is no way round
                received += len(chunk)
                if not too_big and received > limit:
                    too_big = True
                    body = bytearray()
                if too_big:  # discarded, so the client gets to read the 413 (module docstring)
                    if received > limit + DRAIN_BYTES:
                        break
                    continue
                body += chunk
        except ClientDisconnect:
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            log.warning("%s disconnected during an upload to %s after %d bytes", client, request.url.path, received)
            return None
        if too_big:
            raise over_limit(declared)
        return bytes(body)

    async def read_uploads(request: Request, body: bytes) -> list[tuple[str, str | None, bytes]]:
        """``[(field, file name, bytes)]`` of the fields ``before`` and ``after``; the form's spooled files are
        closed."""
        try:
            form = await Request({**request.scope}, _replay(body)).form()
        except Exception as e:  # malformed multipart: the parser's own message
            raise HTTPProblem(400, f"not a multipart form ({_reason(e)})") from None
        try:
            uploads = []
            for field in ("before", "after"):
                upload = form.get(field)
                if not isinstance(upload, UploadFile):
                    raise HTTPProblem(400, f"{field}: missing (send multipart fields 'before' and 'after' as files)")
                uploads.append((field, upload.filename, await upload.read()))
            return uploads
        finally:
            await form.close()

    def caption_pair(uploads: list[tuple[str, str | None, bytes]], attention: bool) -> Caption:
        """Runs in a worker thread, one pair at a time: decode (each size checked from its header first), forward
        pass, mask and, when asked for, the attention maps."""
        with lock:  # also bounds the decoded pixels in memory to one pair
            before, after = (read_upload(data, field, name, max_image_pixels) for field, name, data in uploads)
            if before.shape != after.shape:
                labels = [upload_label(field, name) for field, name, _ in uploads]
                raise HTTPProblem(422, f"{labels[0]} is {before.shape[1]}×{before.shape[0]} but {labels[1]} is "
                                  f"{after.shape[1]}×{after.shape[0]}; both dates must have the same size")  # fmt: skip
            try:
                res = captioner(before, after, attention_maps=attention)
            except ChangeCapError as e:
                raise HTTPProblem(422, str(e)) from None
            mask = mask_png_base64(res.mask)
        maps = None
        if res.attention is not None and res.attention_box is not None:
            grid = int(res.attention.shape[-1])
            rows = [[round(float(v), 4) for v in word.reshape(-1)] for word in res.attention]
            maps = Attention(words=res.words(), grid=grid, maps=rows, box=list(res.attention_box))
        return Caption(caption=res.caption, change_probability=res.change_probability, mask_png=mask, attention=maps)

    @app.post(
        "/api/caption",
        response_model=Caption,
        responses={
            400: {"description": "a missing field, an unreadable image, or attention maps the model does not give"},
            413: {"description": "upload larger than the limit, or an image with more pixels than the limit"},
            422: {"description": "the two dates differ in size"},
        },  # fmt: skip
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["before", "after"],
                            "properties": {
                                "before": {"type": "string", "format": "binary"},
                                "after": {"type": "string", "format": "binary"},
                            },
                        }
                    }
                },
            }
        },  # fmt: skip
    )
    async def caption(request: Request, attention: bool = False) -> Any:
        """Caption one pair: multipart fields ``before`` and ``after`` (PNG, JPEG, TIFF …, same size).
        ``attention=true``: also where the model looked for each word (models that declare attention maps)."""
        if attention and not captioner.capabilities.attention_maps:
            declared = ", ".join(captioner.capabilities.names()) or "none"
            raise HTTPProblem(400, f"attention=true: {captioner.architecture} models give no attention maps "
                              f"(their capabilities: {declared})")  # fmt: skip
        body = await read_body(request)
        if body is None:
            return Response(status_code=400)  # nobody is left to read it
        uploads = await read_uploads(request, body)
        del body
        return await run_in_threadpool(caption_pair, uploads, attention)  # the event loop keeps answering meanwhile

    return app

def _replay(body: bytes, piece: int = 1024 * 1024) -> Any:
    """An ASGI ``receive`` that hands back an already read body (so the form parser reads it once more), ``piece``
    bytes at a time with a turn of the event loop before each: parsing a large form never holds up other requests
    for long."""
    import anyio

    offset, done = 0, False

    async def receive() -> dict[str, Any]:
        nonlocal offset, done
        if done:
            return {"type": "http.disconnect"}
        await anyio.sleep(0)
        chunk = body[offset : offset + piece]
        offset += piece
        done = offset >= len(body)
        return {"type": "http.request", "body": chunk, "more_body": not done}

    return receive
