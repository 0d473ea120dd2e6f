"""The JSON API of ``changecap serve`` through FastAPI's test client: captions equal the predictor's, masks for a
model with a CD head, 4xx (never 500) for bad input, the upload limit, the OpenAPI schema, concurrent requests."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="changecap serve needs the 'serve' extra (FastAPI)")
pytest.importorskip("httpx", reason="FastAPI's test client needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from changecap.inference import ChangeCaptioner  # noqa: E402
from changecap.serve import create_app, render_samples  # noqa: E402


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
    return TestClient(create_app(captioner, str(model), samples=samples, **kw)), captioner


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


def test_a_model_with_a_cd_head_returns_the_mask_at_the_image_size(scc_dir: Path, samples: list) -> None:
    client, _ = client_for(scc_dir, samples)
    body = client.post("/api/caption", files=pair(png(3, (50, 70)), png(4, (50, 70)))).json()
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png"]))))
    assert mask.shape == (50, 70) and set(np.unique(mask)) <= {0, 255}


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ({"before": ("b.png", png(1), "image/png")}, 400, "after: missing"),
        (pair(b"not an image", png(2)), 400, "before: not a readable image"),
        (pair(png(1), b""), 400, "after: empty upload"),
        (pair(png(1, (40, 40)), png(2, (40, 48))), 422, "same size"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(
    model_dir: Path, samples: list, files: dict, status: int, message: str
) -> None:
    client, _ = client_for(model_dir, samples)
    r = client.post("/api/caption", files=files)
    assert r.status_code == status and message in r.json()["detail"]


def test_a_grey_image_is_a_400_not_a_500(model_dir: Path, samples: list) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).convert("LA").save(buf, format="PNG")
    client, _ = client_for(model_dir, samples)
    r = client.post("/api/caption", files=pair(buf.getvalue(), png(2)))
    assert r.status_code == 400 and r.json()["detail"].startswith("before:")


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
    assert set(spec["components"]["schemas"][ref]["properties"]) == {"caption", "change_probability", "mask_png"}
    assert {"400", "413", "422"} <= set(post["responses"])


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
