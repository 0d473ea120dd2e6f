"""The JSON API of ``changecap serve``: through FastAPI's test client, captions equal the predictor's, masks for a
model with a CD head, 4xx (never 500) with the upload's name for bad input, the upload and pixel limits (a
decompression bomb included), uploads closed, the OpenAPI schema and /docs served offline, concurrent requests;
through a real uvicorn server, a client sending its whole body without waiting reads the 413, health answers while
a pair is being captioned, and a client that disconnects mid-upload is one log line."""

from __future__ import annotations

import base64
import gc
import io
import json
import logging
import re
import socket
import struct
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.serve import app as app_module  # noqa: E402
from changecap.serve import create_app, render_samples  # noqa: E402
from tests.serve.fakes import FakeCaptioner  # noqa: E402


def png(seed: int, size: tuple[int, int] = (40, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def samples() -> list:
    return render_samples(2)


def client_for(model: Path, samples: list, **kw: float) -> tuple[TestClient, ChangeCaptioner]:
    captioner = ChangeCaptioner.from_pretrained(model, device="cpu")
    app = create_app(captioner, str(model), samples=samples, **kw)
    return TestClient(app, base_url="http://localhost:8000"), captioner


def pair(before: bytes, after: bytes) -> dict:
    return {"before": ("b.png", before, "image/png"), "after": ("a.png", after, "image/png")}


def test_caption_equals_the_predictor(model_dir: Path, samples: list) -> None:
    client, captioner = client_for(model_dir, samples)
    r = client.post("/api/caption", files=pair(png(1), png(2)))
    assert r.status_code == 200
    body = r.json()
    want = captioner(np.asarray(Image.open(io.BytesIO(png(1)))), np.asarray(Image.open(io.BytesIO(png(2)))))
    assert body["caption"] == want.caption and body["change_probability"] == pytest.approx(want.change_probability)
    assert body["mask_png"] is None
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["predicts_masks"] is False and health["architecture"] == "hisem"
    assert health["max_image_pixels"] == 4096 * 4096
    assert health["capabilities"] == ["captions", "change_probability", "beam_search", "onnx", "attention_maps"]


def test_attention_is_an_opt_in_of_the_caption_request(model_dir: Path, scc_dir: Path, samples: list) -> None:
    client, captioner = client_for(model_dir, samples)
    assert client.post("/api/caption", files=pair(png(1), png(2))).json()["attention"] is None  # not asked for
    r = client.post("/api/caption?attention=true", files=pair(png(1, (40, 60)), png(2, (40, 60))))
    assert r.status_code == 200
    body = r.json()
    want = captioner(np.asarray(Image.open(io.BytesIO(png(1, (40, 60))))),
                     np.asarray(Image.open(io.BytesIO(png(2, (40, 60))))), attention_maps=True)  # fmt: skip
    att = body["attention"]
    assert att["words"] == body["caption"].split() == want.words()
    assert att["grid"] == want.attention.shape[-1] and att["box"] == [0, 0, 60, 40]
    assert len(att["maps"]) == len(att["words"]) and all(len(m) == att["grid"] ** 2 for m in att["maps"])
    assert np.allclose(np.asarray(att["maps"]), want.attention.reshape(len(att["words"]), -1), atol=1e-4)
    scc, _ = client_for(scc_dir, samples)  # Semantic-CC declares no attention maps: a 400 that says so
    r = scc.post("/api/caption?attention=true", files=pair(png(3), png(4)))
    assert r.status_code == 400 and r.json()["detail"].startswith("attention=true: semantic_cc models give no")
    assert "\n" not in r.json()["detail"]


def test_a_model_with_a_cd_head_returns_the_mask_at_the_image_size(scc_dir: Path, samples: list) -> None:
    client, _ = client_for(scc_dir, samples)
    body = client.post("/api/caption", files=pair(png(3, (50, 70)), png(4, (50, 70)))).json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}


def _encoded(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _tiff(arr: np.ndarray) -> bytes:
    tifffile = pytest.importorskip("tifffile")
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


# POST /api/caption with a malformed request: (id, request (files= or content=, headers=), status, start of detail)
UPLOAD_ROWS: list[tuple[str, Callable[[], dict[str, Any]], int, str]] = [
    ("missing-after", lambda: {"files": {"before": ("b.png", png(1), "image/png")}}, 400, "after: missing"),
    ("missing-both", lambda: {"files": {"other": ("x.png", png(1), "image/png")}}, 400, "before: missing"),
    ("field-not-a-file", lambda: {"data": {"before": "text", "after": "text"},
                                  "files": {"x": ("x", b"x", "text/plain")}}, 400, "before: missing"),
    ("not-multipart", lambda: {"content": b"before=1", "headers": {"content-type": "text/plain"}}, 400,
     "before: missing"),
    ("cut-multipart", lambda: {"content": b"--zz\r\nContent-Disposition: form-data\r\n",
                               "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400,
     "before: missing"),
    ("multipart-without-boundary", lambda: {"content": b"x" * 10, "headers": {"content-type": "multipart/form-data"}},
     400, "not a multipart form"),
    ("empty-file", lambda: {"files": pair(png(1), b"")}, 400, "after (a.png): empty upload"),
    ("not-an-image", lambda: {"files": pair(b"not an image", png(2))}, 400, "before (b.png): not a readable image"),
    ("truncated-png", lambda: {"files": pair(png(1)[:120], png(2))}, 400, "before (b.png): corrupt image"),
    ("cut-jpeg", lambda: {"files": {"before": ("b.jpg", _encoded(np.full((40, 40, 3), 9, np.uint8), "JPEG")[:200],
                                               "image/jpeg"), "after": ("a.png", png(2), "image/png")}}, 400,
     "before (b.jpg): corrupt image"),
    ("grey", lambda: {"files": pair(_encoded(np.zeros((40, 40), np.uint8)), png(2))}, 400,
     "before (b.png): single-band"),
    ("transparent", lambda: {"files": pair(_encoded(np.zeros((40, 40, 4), np.uint8)), png(2))}, 400,
     "before (b.png): RGBA image with a transparent alpha"),
    ("tiff-16-bit", lambda: {"files": {"before": ("b.tif", _tiff(np.full((40, 40, 3), 4000, np.uint16)),
                                                  "image/tiff"), "after": ("a.png", png(2), "image/png")}}, 400,
     "before (b.tif): uint16 pixel values span"),
    ("bomb", lambda: {"files": {"before": ("bomb.png", header_only_png(30000, 30000), "image/png"),
                                "after": ("a.png", png(2), "image/png")}}, 413,
     "before (bomb.png): 30000×30000 image (900,000,000 pixels) exceeds the limit"),
    ("sizes-differ", lambda: {"files": pair(png(1, (40, 40)), png(2, (40, 48)))}, 422,
     "before (b.png) is 40×40 but after (a.png) is 48×40"),
    ("too-large", lambda: {"files": pair(png(5, (200, 200)), png(6, (200, 200)))}, 413,
     "upload of"),  # past the 64 KB limit of these rows
    ("odd-file-name", lambda: {"files": {"before": ("x\x1b[31m\n.png", b"junk", "image/png"),
                                         "after": ("a.png", png(2), "image/png")}}, 400,
     "before (x [31m%0A.png): not a readable image"),  # the control character blanked, the newline sent escaped
]  # fmt: skip


@pytest.mark.parametrize(("make", "status", "message"), [r[1:] for r in UPLOAD_ROWS], ids=[r[0] for r in UPLOAD_ROWS])
def test_malformed_uploads_are_a_4xx_with_a_one_line_message(
    samples: list, make: Callable[[], dict[str, Any]], status: int, message: str
) -> None:
    """Every row: the status, a JSON body whose one-line detail names the field and the file, the model never
    called, every upload closed (no ResourceWarning), and the server still answering."""
    captioner = FakeCaptioner()
    client = TestClient(create_app(captioner, "fake", samples=samples, max_upload_mb=64 / 1024),
                        base_url="http://localhost")  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = client.post("/api/caption", **make())
        gc.collect()
    detail = r.json()["detail"]
    assert r.status_code == status and isinstance(detail, str) and detail.startswith(message), (r.status_code, detail)
    assert "\n" not in detail and "BytesIO" not in detail and captioner.calls == 0
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert client.get("/api/health").json()["status"] == "ok"


def test_a_grey_image_is_a_400_not_a_500(model_dir: Path, samples: list) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).convert("LA").save(buf, format="PNG")
    client, _ = client_for(model_dir, samples)
    r = client.post("/api/caption", files=pair(buf.getvalue(), png(2)))
    assert r.status_code == 400 and r.json()["detail"].startswith("before (b.png): 2-band image")


def test_uploads_past_the_limit_get_413(model_dir: Path, samples: list) -> None:
    client, _ = client_for(model_dir, samples, max_upload_mb=0.01)  # 10 KB
    big = png(5, (200, 200))  # ~120 KB of noise
    r = client.post("/api/caption", files=pair(big, big))
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    # without a Content-Length header (a chunked body) the bytes read are counted
    def chunks():  # noqa: ANN202
        yield b"x" * 20_000

    r = client.post("/api/caption", content=chunks(), headers={"content-type": "multipart/form-data; boundary=z"})
    assert r.status_code == 413


def test_openapi_documents_the_caption_endpoint(model_dir: Path, samples: list) -> None:
    client, _ = client_for(model_dir, samples)
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/caption"]["post"]
    form = post["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["required"]) == {"before", "after"}
    ref = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = {"caption", "change_probability", "mask_png", "attention"}
    assert set(spec["components"]["schemas"][ref]["properties"]) == fields
    assert {"400", "413", "422"} <= set(post["responses"])
    assert [(p["name"], p["in"]) for p in post["parameters"]] == [("attention", "query")]


def test_page_and_samples_have_no_external_assets(model_dir: Path, samples: list) -> None:
    client, _ = client_for(model_dir, samples)
    page = client.get("/").text
    assert "<script" in page and "http://" not in page and "https://" not in page
    listing = client.get("/api/samples").json()
    assert [s["index"] for s in listing] == [0, 1]
    img = client.get("/api/samples/0/before.png")
    assert img.status_code == 200 and Image.open(io.BytesIO(img.content)).size == (128, 128)
    assert client.get("/api/samples/9/before.png").status_code == 404


def test_concurrent_requests_are_served_safely(model_dir: Path, samples: list) -> None:
    client, captioner = client_for(model_dir, samples)
    inputs = [(png(10 + i), png(20 + i)) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda p: client.post("/api/caption", files=pair(*p)).json()["caption"], inputs))
    singles = [captioner(np.asarray(Image.open(io.BytesIO(b))), np.asarray(Image.open(io.BytesIO(a)))).caption
               for b, a in inputs]  # fmt: skip
    assert answers == singles


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that declares ``width × height`` RGB pixels in a few hundred bytes (its rows are mostly missing): what a
    decompression bomb looks like to a reader that trusts the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(600))) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("size", "max_pixels", "status", "message"),
    [
        ((30000, 30000), None, 413,
         "before (bomb.png): 30000×30000 image (900,000,000 pixels) exceeds the limit of 16,777,216 pixels per image"),
        ((5000, 5000), None, 413, "before (bomb.png): 5000×5000 image (25,000,000 pixels) exceeds the limit"),
        ((30000, 30000), 10**9, 413, "before (bomb.png): 30000×30000 image (900,000,000 pixels) exceeds Pillow's"),
        ((1000, 1000), None, 400, "before (bomb.png): corrupt image"),  # allowed size, rows missing
    ],
)
def test_images_past_the_pixel_limit_are_refused_from_their_header(
    samples: list, size: tuple[int, int], max_pixels: int | None, status: int, message: str
) -> None:
    bomb = header_only_png(*size)
    assert len(bomb) < 300
    captioner = FakeCaptioner()
    kw = {} if max_pixels is None else {"max_image_pixels": max_pixels}
    client = TestClient(create_app(captioner, "fake", samples=samples, **kw), base_url="http://localhost")
    r = client.post("/api/caption", files={"before": ("bomb.png", bomb, "image/png"), "after": ("a.png", png(2))})
    assert r.status_code == status and r.json()["detail"].startswith(message), r.json()
    assert captioner.calls == 0


def test_uploads_are_read_upright_as_every_command_reads_images(samples: list) -> None:
    """A JPEG stored 48 wide and 40 high with EXIF orientation 6 (turn clockwise) is a 40 × 48 image, as viewers
    show it: it pairs with a 40 × 48 PNG and is captioned at that size."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 120, np.uint8)).save(buf, format="JPEG", exif=exif.tobytes())
    client = TestClient(create_app(FakeCaptioner(), "fake", samples=samples), base_url="http://localhost")
    r = client.post("/api/caption", files={"before": ("turned.jpg", buf.getvalue(), "image/jpeg"),
                                           "after": ("a.png", png(2, (48, 40)), "image/png")})  # fmt: skip
    assert r.status_code == 200 and r.json()["caption"] == "40x48 pair", r.json()


def test_the_pixel_limit_admits_images_up_to_it(samples: list) -> None:
    captioner = FakeCaptioner()
    client = TestClient(create_app(captioner, "fake", samples=samples, max_image_pixels=40 * 48),
                        base_url="http://localhost")  # fmt: skip
    assert client.post("/api/caption", files=pair(png(1, (40, 48)), png(2, (40, 48)))).json()["caption"] == "48x40 pair"
    assert client.post("/api/caption", files=pair(png(1, (40, 49)), png(2, (40, 49)))).status_code == 413


def test_uploads_are_closed_on_every_path(model_dir: Path, samples: list) -> None:
    client, _ = client_for(model_dir, samples)
    big = png(7, (700, 700))  # past the 1 MB a spooled upload keeps in memory: rolled over to a temporary file
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        codes = [
            client.post("/api/caption", files=pair(png(1), png(2))).status_code,
            client.post("/api/caption", files=pair(big, png(2))).status_code,  # 422: sizes differ
            client.post("/api/caption", files=pair(b"not an image", png(2))).status_code,
            client.post("/api/caption", files={"before": ("b.png", big, "image/png")}).status_code,
        ]
        gc.collect()
    assert codes == [200, 422, 400, 400]
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []


def test_docs_and_every_asset_they_load_are_served_locally(samples: list) -> None:
    client = TestClient(create_app(FakeCaptioner(), "fake", samples=samples), base_url="http://localhost")
    docs = client.get("/docs")
    assert docs.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]*)"', docs.text) + re.findall(r"url: '([^']*)'", docs.text)
    assert {"/openapi.json"} < set(refs)
    for ref in refs:
        if ref.startswith("data:"):
            continue
        assert ref.startswith("/") and not ref.startswith("//"), ref  # this server, not another host
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        if ref.endswith(".css"):
            urls = [u.strip("'\" ") for u in re.findall(r"url\(([^)]*)\)", asset.text)]
            assert urls and all(u.startswith("data:") for u in urls)
    for path in ("/", "/docs", "/docs/oauth2-redirect", "/openapi.json"):
        assert not re.search(r"https?://", client.get(path).text), path
    assert client.get("/redoc").status_code == 404  # ReDoc would fetch fonts from another host


# ------------------------------------------------------------------------------------------- a real uvicorn server
def multipart(files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type, built by hand (urllib has no form encoder)."""
    body = b""
    for field, (name, data) in files.items():
        body += (f'--zz\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"  # fmt: skip
    return body + b"--zz--\r\n", "multipart/form-data; boundary=zz"


def post_pair(base: str, before: bytes, after: bytes) -> dict:
    body, ctype = multipart({"before": ("b.png", before), "after": ("a.png", after)})
    req = urllib.request.Request(base + "/api/caption", data=body, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def raw_exchange(base: str, head: str, body: bytes = b"") -> bytes:
    """Send ``head`` (request line and headers) and ``body`` on a plain socket; everything the server answers."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_a_client_that_sends_its_whole_body_without_waiting_reads_the_413(
    samples: list, serve_app: Callable[[Any], str]
) -> None:
    base = serve_app(create_app(FakeCaptioner(), "fake", samples=samples, max_upload_mb=0.1))
    body, ctype = multipart({"before": ("b.png", bytes(20_000_000)), "after": ("a.png", png(2))})
    # urllib sends the body straight after the headers (no Expect: 100-continue)
    req = urllib.request.Request(base + "/api/caption", data=body, headers={"Content-Type": ctype})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 413 and err.value.headers["connection"] == "close"
    assert json.loads(err.value.read())["detail"] == (
        f"upload of {len(body)} bytes exceeds the limit of 0.1 MB (--max-upload-mb)"
    )
    # a chunked body declares no length: counted as it arrives, drained the same way
    chunk = b"%x\r\n%s\r\n" % (65536, bytes(65536))
    answer = raw_exchange(base, f"POST /api/caption HTTP/1.1\nHost: 127.0.0.1\nContent-Type: {ctype}\n"
                          "Transfer-Encoding: chunked\n", chunk * 30 + b"0\r\n\r\n")  # fmt: skip
    assert answer.startswith(b"HTTP/1.1 413") and b"exceeds the limit of 0.1 MB" in answer
    # a client that waits for 100-continue, and one that announces more than is worth draining: answered at once
    for expect in ("Expect: 100-continue\n", ""):
        head = f"POST /api/caption HTTP/1.1\nHost: 127.0.0.1\nContent-Type: {ctype}\nContent-Length: {10**10}\n"
        answer = raw_exchange(base, head + expect)
        assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer
    assert json.loads(urllib.request.urlopen(base + "/api/health", timeout=60).read())["status"] == "ok"


@pytest.mark.parametrize("blocked", ["model", "decode"])
def test_health_answers_while_pairs_are_being_captioned(
    samples: list, serve_app: Callable[[Any], str], monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    captioner = FakeCaptioner(block=blocked == "model")
    if blocked == "decode":  # the first image decoded waits for the test: a large image being decoded
        decode = app_module.read_upload

        def slow_decode(*args: Any) -> np.ndarray:
            captioner.entered.set()
            assert captioner.release.wait(60), "the test never released the decoder"
            return decode(*args)

        monkeypatch.setattr(app_module, "read_upload", slow_decode)
    base = serve_app(create_app(captioner, "fake", samples=samples))
    with ThreadPoolExecutor(max_workers=3) as pool:
        pending = [pool.submit(post_pair, base, png(i), png(i + 1)) for i in range(3)]  # one works, two queue
        assert captioner.entered.wait(60)
        health = json.loads(urllib.request.urlopen(base + "/api/health", timeout=60).read())
        page = urllib.request.urlopen(base + "/", timeout=60).status
        docs = urllib.request.urlopen(base + "/docs", timeout=60).status
        in_flight = [not p.done() for p in pending]  # nothing can finish before the release below
        captioner.release.set()
        answers = [p.result(timeout=60)["caption"] for p in pending]
    assert health["status"] == "ok" and page == docs == 200 and in_flight == [True] * 3
    assert answers == ["40x40 pair"] * 3


def test_a_client_that_disconnects_mid_upload_is_one_log_line(
    samples: list, serve_app: Callable[[Any], str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("uvicorn"), "propagate", True)  # whatever configured uvicorn's logging
    caplog.set_level(logging.INFO)
    base = serve_app(create_app(FakeCaptioner(), "fake", samples=samples))
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(b"POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=zz\r\n"
                  b"Content-Length: 100000\r\n\r\n" + bytes(1000))  # fmt: skip
    deadline = time.monotonic() + 60  # a bound on the wait, not a timing check
    while not any("disconnected" in r.getMessage() or r.levelno >= logging.ERROR for r in caplog.records):
        assert time.monotonic() < deadline, "the server never noticed the disconnect"
        time.sleep(0.02)
    assert json.loads(urllib.request.urlopen(base + "/api/health", timeout=60).read())["status"] == "ok"
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.exc_info) for r in loud] == [("changecap.serve", None)]
    assert re.fullmatch(r"127\.0\.0\.1:\d+ disconnected during an upload to /api/caption after 1000 bytes",
                        loud[0].getMessage())  # fmt: skip
