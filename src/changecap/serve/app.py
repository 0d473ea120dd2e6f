"""The local web page and JSON API of ``changecap serve`` (extra ``serve``: FastAPI + uvicorn).

* ``GET /`` — one static page, no external assets: upload two images or pick a bundled SynthCC sample, see both
  dates side by side, the caption, the change probability and the mask overlay (models with a CD head).
* ``POST /api/caption`` — multipart fields ``before`` and ``after`` → ``{"caption", "change_probability",
  "mask_png"}`` (``mask_png``: base64 PNG, 255 = changed, at the images' size; null without a CD head).
* ``GET /api/health`` — the model and whether it is ready; ``GET /api/samples`` and
  ``GET /api/samples/{index}/{before|after}.png`` — the bundled samples (rendered by ``changecap.synth`` at start).

The model is loaded once; requests run one at a time through it (a lock: the model is not re-entrant and a CPU has
no spare cores to give a second forward pass). Bad input is a 4xx with a message — 413 past the upload limit
(``max_upload_mb`` per request, checked on the declared length and again on the bytes read), 400 for a missing field
or an undecodable image, 422 for dates of different sizes — never a 500.
"""

import base64
import io
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from changecap.errors import ChangeCapError

SAMPLE_SIZE = 128


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
    """A client error to answer with ``status`` and ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def decode_image(data: bytes, field: str) -> np.ndarray:
    """Upload bytes → uint8 RGB [H, W, 3]; a 400 naming the field when they are not a usable image."""
    from changecap.data.image_io import pil_to_rgb

    if not data:
        raise HTTPProblem(400, f"{field}: empty upload")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return pil_to_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise HTTPProblem(400, f"{field}: not a readable image ({' '.join(str(e).split())})") from None
    except ChangeCapError as e:
        raise HTTPProblem(400, f"{field}: {e}") from None


def mask_png_base64(mask: np.ndarray | None) -> str | None:
    if mask is None:
        return None
    buf = io.BytesIO()
    Image.fromarray((mask > 0).astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def create_app(
    captioner: Any, model_name: str, *, max_upload_mb: float = 32.0, samples: list[Sample] | None = None
) -> Any:
    """The FastAPI application serving ``captioner`` (a :class:`~changecap.inference.ChangeCaptioner`).

    FastAPI reads the endpoints' annotations at definition time, which is why this module does without
    ``from __future__ import annotations`` (the endpoints' types are imported inside this function)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from pydantic import BaseModel
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    from changecap.serve.page import PAGE

    limit = int(max_upload_mb * 1024 * 1024)
    lock = threading.Lock()
    bundled = render_samples() if samples is None else samples

    class Caption(BaseModel):
        caption: str | None
        change_probability: float | None
        mask_png: str | None

    class Health(BaseModel):
        status: str
        model: str
        architecture: str | None
        predicts_masks: bool
        max_upload_mb: float

    app = FastAPI(title="changecap", description="Remote sensing change captioning of image pairs.",
                  version="1")  # fmt: skip

    @app.exception_handler(HTTPProblem)
    async def _problem(_: Request, exc: HTTPProblem) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE

    @app.get("/api/health", response_model=Health)
    def health() -> Health:
        arch = getattr(getattr(captioner.model, "config", None), "architecture", None)
        return Health(status="ok", model=model_name, architecture=arch, predicts_masks=captioner.predicts_masks,
                      max_upload_mb=max_upload_mb)  # fmt: skip

    @app.get("/api/samples")
    def sample_list() -> list[dict[str, Any]]:
        return [{"index": i, "name": s.name} for i, s in enumerate(bundled)]

    @app.get("/api/samples/{index}/{date}.png", responses={200: {"content": {"image/png": {}}}})
    def sample_image(index: int, date: str) -> Response:
        if not 0 <= index < len(bundled) or date not in ("before", "after"):
            raise HTTPProblem(404, f"no sample {index}/{date}")
        return Response(getattr(bundled[index], date), media_type="image/png")

    @app.post(
        "/api/caption",
        response_model=Caption,
        responses={
            400: {"description": "a missing field or an unreadable image"},
            413: {"description": "upload larger than the limit"},
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
    async def caption(request: Request) -> Caption:
        """Caption one pair: multipart fields ``before`` and ``after`` (PNG, JPEG, TIFF …, same size)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(413, f"upload of {int(declared)} bytes exceeds the limit of {max_upload_mb:g} MB")
        body = bytearray()
        async for chunk in request.stream():  # counted as it arrives: a missing or false length is no way round
            body += chunk
            if len(body) > limit:
                raise HTTPProblem(413, f"upload exceeds the limit of {max_upload_mb:g} MB")
        try:
            form = await Request({**request.scope}, _replay(bytes(body))).form()
        except Exception as e:  # malformed multipart: the parser's own message
            raise HTTPProblem(400, f"not a multipart form ({' '.join(str(e).split())})") from None
        images = []
        for field in ("before", "after"):
            upload = form.get(field)
            if not isinstance(upload, UploadFile):
                raise HTTPProblem(400, f"{field}: missing (send multipart fields 'before' and 'after' as files)")
            images.append(decode_image(await upload.read(), field))
        before, after = images
        if before.shape != after.shape:
            raise HTTPProblem(422, f"before is {before.shape[1]}×{before.shape[0]} but after is "
                              f"{after.shape[1]}×{after.shape[0]}; both dates must have the same size")  # fmt: skip

        def run() -> Any:
            with lock:
                return captioner(before, after)

        res = await run_in_threadpool(run)  # the event loop keeps answering (health, page) meanwhile
        return Caption(caption=res.caption, change_probability=res.change_probability,
                       mask_png=mask_png_base64(res.mask))  # fmt: skip

    return app


def _replay(body: bytes) -> Any:
    """An ASGI ``receive`` that hands back an already read body (so the form parser reads it once more)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
