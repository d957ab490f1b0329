"""The HTTP API against a real uvicorn server on loopback, driven by httpx."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import Segmenter, create_model, save_model
from pixelwise.serve import create_app
from pixelwise.serve.app import run_length_encode
from pixelwise.serve.background import serve_in_thread

CLASSES = ["background", "cell", "membrane"]
PALETTE = [[0, 0, 0], [0, 200, 0], [200, 0, 200]]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("run")
    save_model(create_model("unet", 3, base_channels=4, depth=2), directory, class_names=CLASSES, palette=PALETTE)
    return Segmenter(directory)


@pytest.fixture(scope="module")
def server(segmenter):
    app = create_app(segmenter, max_pixels=200_000, max_body_bytes=400_000)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def picture():
    return np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)


def test_health_and_model_card(server):
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    card = httpx.get(f"{server}/v1/model").json()
    assert card["name"] == "unet" and card["class_names"] == CLASSES and card["palette"] == PALETTE
    assert card["card"]["limits"]["max_pixels"] == 200_000


def test_segment_returns_the_indexed_png_mask(server, segmenter, picture):
    response = httpx.post(f"{server}/v1/segment", files={"image": ("p.png", png_bytes(picture), "image/png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = Image.open(io.BytesIO(response.content))
    assert mask.mode == "P"
    np.testing.assert_array_equal(np.asarray(mask), segmenter.predict(picture))
    # The raw body works too, for clients without multipart.
    raw = httpx.post(f"{server}/v1/segment", content=png_bytes(picture), headers={"content-type": "image/png"})
    assert raw.content == response.content


def test_segment_json_gives_areas_and_a_decodable_rle(server, segmenter, picture):
    response = httpx.post(f"{server}/v1/segment?format=json", files={"image": ("p.png", png_bytes(picture))})
    body = response.json()
    expected = segmenter.predict(picture)
    assert (body["width"], body["height"]) == (41, 30)
    assert [c["pixels"] for c in body["classes"]] == np.bincount(expected.ravel(), minlength=3).tolist()
    rle = body["mask"]
    decoded = np.repeat(rle["values"], rle["counts"]).reshape(rle["size"])
    np.testing.assert_array_equal(decoded, expected)


def test_run_length_encoding_by_hand():
    encoded = run_length_encode(np.array([[1, 1, 0], [0, 0, 2]]))
    assert encoded["values"] == [1, 0, 2] and encoded["counts"] == [2, 3, 1] and encoded["size"] == [2, 3]


@pytest.mark.parametrize("case", ["not_an_image", "truncated", "too_many_pixels", "bomb", "body_too_large",
                                  "no_file", "empty", "bad_format"])
def test_bad_input_gets_a_4xx_with_a_json_error(server, picture, case):
    png = png_bytes(picture)
    url, files, content, expected = f"{server}/v1/segment", None, None, None
    if case == "not_an_image":
        files, expected = {"image": ("x.txt", b"hello, not an image")}, 415
    elif case == "truncated":
        files, expected = {"image": ("t.png", png[: len(png) // 2])}, 400
    elif case == "too_many_pixels":
        files, expected = {"image": ("big.png", png_bytes(np.zeros((500, 500), np.uint8)))}, 413
    elif case == "bomb":
        # 20000 x 20000 one-bit pixels compress to a few kB: the header alone must get it refused.
        buffer = io.BytesIO()
        Image.new("1", (20000, 20000)).save(buffer, format="PNG")
        assert len(buffer.getvalue()) < 100_000
        files, expected = {"image": ("bomb.png", buffer.getvalue())}, 413
    elif case == "body_too_large":
        files, expected = {"image": ("huge.bin", b"\0" * 500_000)}, 413
    elif case == "no_file":
        files, expected = {"note": (None, "just a field")}, 400
    elif case == "empty":
        content, expected = b"", 400
    elif case == "bad_format":
        url, files, expected = f"{url}?format=gif", {"image": ("p.png", png)}, 400
    response = httpx.post(url, files=files, content=content)
    assert response.status_code == expected, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]


def test_busy_server_answers_503_with_retry_after(segmenter, picture):
    class Slow:
        """The real segmenter, slowed down so that requests overlap."""

        def __getattr__(self, name):
            return getattr(segmenter, name)

        def predict(self, image):
            time.sleep(1.0)
            return segmenter.predict(image)

    app = create_app(Slow(), max_concurrent=1, max_queue=0)
    responses = []
    with serve_in_thread(app) as url:
        def send():
            responses.append(httpx.post(f"{url}/v1/segment", files={"image": ("p.png", png_bytes(picture))},
                                        timeout=30))

        threads = [threading.Thread(target=send) for _ in range(3)]
        for thread in threads:
            thread.start()
            time.sleep(0.1)
        for thread in threads:
            thread.join()
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 503, 503]
    busy = next(r for r in responses if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]


def test_page_is_served(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="overlay"' in page.text and 'id="opacity"' in page.text


def test_serve_binds_loopback_by_default():
    from pixelwise.cli import build_parser

    args = build_parser().parse_args(["serve", "--checkpoint", "run"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
