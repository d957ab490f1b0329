"""Bounds a user or an attacker found loose: thin images (memory, time, 413 before decoding), clients that
leave mid-upload (one log line each) and TIFF uploads on the web page (drawn from the server's rendering)."""

from __future__ import annotations

import io
import logging
import socket
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import Segmenter, create_model, save_model
from pixelwise.infer.memory import layout_for, peak_bytes_of, plan_memory
from pixelwise.serve import create_app
from pixelwise.serve.background import serve_in_thread

MiB = 1 << 20


@pytest.fixture(scope="module")
def quickstart_unet():
    """The quickstart recipe's network (configs/quickstart.yaml), untrained."""
    torch.manual_seed(0)
    return create_model("unet", 4, base_channels=16, depth=3, batch_norm=True).eval()


@pytest.fixture(scope="module")
def valid_unet():
    torch.manual_seed(0)
    return create_model("unet", 3, base_channels=4, depth=2, padding="valid").eval()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def thin(width: int) -> np.ndarray:
    """A (1, width) grey ramp: a few KB as PNG."""
    return np.ascontiguousarray(np.linspace(0, 255, width).astype(np.uint8)[None])


@pytest.mark.parametrize("settings", [{}, {"mode": "slide"}, {"whole_up_to": 10_000}])
def test_a_thin_image_runs_in_seconds_within_one_windows_memory(quickstart_unet, settings):
    """1 x 200000 pixels: slide mode used to pad every window to 512 rows (a 512 x 200000 copy, 2.8 GB with
    the logits, and minutes of work); windows now shrink to 1 row and grow along the image."""
    segmenter = Segmenter(quickstart_unet, **settings)
    layout = layout_for(1, 200_000, segmenter)
    assert layout.window[0] == 1 and layout.computed_pixels <= 2 * 200_000  # no padded rows, overlap at most 2x
    # A window never costs more than a full 512 x 512 one.
    assert layout.window[0] * layout.window[1] <= 512 * 512
    start = time.perf_counter()
    labels = []
    used = peak_bytes_of(lambda: labels.append(segmenter.predict(thin(200_000))))
    assert time.perf_counter() - start < 30
    assert labels[0].shape == (1, 200_000)
    if used is not None:
        assert used < 512 * MiB, used / MiB


def test_overlap_tile_on_a_thin_image_equals_the_whole_mirrored_pass(valid_unet):
    """Tiles gather their own mirrored pixels (no padded copy of the image) and shrink to the image: the
    stitched answer is still the whole padded pass, for one row, one column and a thin strip."""
    rng = np.random.default_rng(0)
    for shape in [(1, 300), (300, 1), (3, 71)]:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        whole = Segmenter(valid_unet).predict_proba(pixels)
        stitched = Segmenter(valid_unet, mode="slide", tile=(8, 16))
        np.testing.assert_allclose(stitched.predict_proba(pixels), whole, atol=1e-5)
        # The short side runs the model's smallest input: 4 output rows (size_multiple) on 44 input rows.
        short = int(np.argmin(shape))
        layout = layout_for(*shape, stitched)
        assert layout.step[short] == valid_unet.size_multiple
        assert layout.window[short] == valid_unet.input_size_for(valid_unet.size_multiple)


def test_whole_mode_plans_the_padded_input_not_the_image(valid_unet):
    """A valid-padding model run whole on a 1 x 1000 image computes a whole input tile high (44 x 1040
    pixels): ``whole_up_to`` counts those, so a thin image goes window by window where its area alone fits."""
    segmenter = Segmenter(valid_unet, whole_up_to=20_000)
    layout = layout_for(1, 1000, segmenter)
    assert layout.windowed  # 1000 pixels of image, 45760 of input
    whole = layout_for(1, 1000, Segmenter(valid_unet))
    assert not whole.windowed and whole.window == (44, 1040) and whole.computed_pixels == 44 * 1040


def test_server_refuses_with_413_what_the_network_would_compute_too_much_for(valid_unet):
    """The pre-decode check uses the same pure function as the Segmenter: a 1 x 400000 image (under the pixel
    limit) would compute 44 input rows per image row, and is refused from its header, with the reason; a
    square image of more pixels is accepted."""
    segmenter = Segmenter(valid_unet)
    plan = plan_memory(segmenter, request_bytes=96 * MiB, max_concurrent=1)
    width = 400_000
    assert width < plan.max_pixels
    app = create_app(segmenter, memory=plan)  # the plan's whole_up_to and grid padding now shape the layout
    layout = layout_for(1, width, segmenter)
    assert layout.computed_pixels > plan.max_computed_pixels
    square = int(width**0.5) + 1
    assert layout_for(square, square, segmenter).computed_pixels <= plan.max_computed_pixels
    with serve_in_thread(app) as url:
        limits = httpx.get(f"{url}/v1/model").json()["card"]["limits"]["memory"]
        refused = httpx.post(f"{url}/v1/segment", content=png(thin(width)), headers={"content-type": "image/png"},
                             timeout=60)
        accepted = httpx.post(f"{url}/v1/segment", content=png(np.zeros((square, square), np.uint8)),
                              headers={"content-type": "image/png"}, timeout=120)
    assert limits["max_computed_pixels"] == plan.max_computed_pixels
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert f"{width}x1 pixels" in error and str(layout.computed_pixels) in error and "padding included" in error
    assert "--max-request-mb" in error
    assert accepted.status_code == 200, accepted.text


def test_a_thin_upload_stays_within_the_servers_budget(quickstart_unet):
    """The probe's 250 MiB server and a 1 x 200000 grey PNG: answered, within the advertised request budget."""
    segmenter = Segmenter(quickstart_unet)
    plan = plan_memory(segmenter, request_bytes=250 * MiB, max_concurrent=1)
    if not plan.measured:
        pytest.skip("peak memory cannot be read on this system (needs Linux /proc/self/clear_refs)")
    body = png(thin(200_000))
    replies = []
    with serve_in_thread(create_app(segmenter, memory=plan)) as url:
        used = peak_bytes_of(lambda: replies.append(httpx.post(
            f"{url}/v1/segment", content=body, headers={"content-type": "image/png"}, timeout=120)))
    assert replies[0].status_code == 200, replies[0].text
    assert np.asarray(Image.open(io.BytesIO(replies[0].content))).shape == (1, 200_000)
    assert used <= plan.request_bytes, (used / MiB, plan)


class Records(logging.Handler):
    """Every record a logger emits, kept."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_client_leaving_mid_upload_costs_one_log_line(quickstart_unet):
    """Headers announcing 1000000 bytes, 10 sent, then the socket closed, five times: starlette's
    ClientDisconnect used to log a 59-line traceback each."""
    leaving = 5
    with serve_in_thread(create_app(Segmenter(quickstart_unet))) as url:
        port = int(url.rsplit(":", 1)[1])
        logger = logging.getLogger("uvicorn.error")
        level, records = logger.level, Records()
        logger.setLevel(logging.INFO)
        logger.addHandler(records)
        try:
            for _ in range(leaving):
                with socket.create_connection(("127.0.0.1", port)) as connection:
                    connection.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n0123456789")
            deadline = time.monotonic() + 10
            while len(records.records) < leaving and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)  # anything logged late shows too
            assert httpx.get(f"{url}/healthz").status_code == 200
        finally:
            logger.removeHandler(records)
            logger.setLevel(level)
    lines = [records.format(record) for record in records.records]
    assert not any(record.exc_info for record in records.records), lines
    assert not any("Traceback" in line or "Exception in ASGI application" in line for line in lines), lines
    assert len(lines) == leaving, lines
    assert all("\n" not in line and len(line) < 200 and "after 10 of 1000000 bytes" in line for line in lines), lines


def tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="TIFF")
    return buffer.getvalue()


def test_preview_renders_what_the_server_decodes(quickstart_unet):
    """POST /v1/preview: a TIFF comes back as the same pixels in PNG, a 16-bit PNG at 8 bits, bad input as
    the documented 4xx."""
    pixels = np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8)
    deep = (np.arange(30 * 41, dtype=np.uint16).reshape(30, 41) * 50).astype(np.uint16)
    with serve_in_thread(create_app(Segmenter(quickstart_unet), max_pixels=100_000)) as url:
        rendered = httpx.post(f"{url}/v1/preview", files={"image": ("p.tif", tiff(pixels), "image/tiff")})
        sixteen = httpx.post(f"{url}/v1/preview", content=png(deep), headers={"content-type": "image/png"})
        too_big = httpx.post(f"{url}/v1/preview", content=png(np.zeros((400, 400), np.uint8)))
        not_image = httpx.post(f"{url}/v1/preview", content=b"hello")
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(rendered.content))), pixels)
    expected = (deep / 65535 * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sixteen.content))), expected)
    assert too_big.status_code == 413 and too_big.json()["error"]
    assert not_image.status_code == 415 and not_image.json()["error"]


def test_the_page_draws_a_tiff_upload(browser, tmp_path):
    """Chromium cannot decode TIFF: the page used to say 'could not be decoded' although the server answered
    200. It now draws the server's rendering of the picture, under the mask."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    torch.manual_seed(0)
    save_model(create_model("unet", 3, base_channels=4, depth=2), tmp_path / "run", class_names=["a", "b", "c"],
               palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    picture = tmp_path / "picture.tif"
    picture.write_bytes(tiff(pixels))

    with serve_in_thread(create_app(Segmenter(tmp_path / "run"))) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#legend li")) == 3)
        browser.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-state") in ("done", "error"))
        status = browser.find_element(By.ID, "status")
        assert browser.find_element(By.ID, "overlay").get_attribute("data-state") == "done", status.text
        assert "could not" not in status.text and "error" not in (status.get_attribute("class") or "")
        sizes, drawn, painted = browser.execute_script(
            "const read = (id) => { const c = document.getElementById(id);"
            "  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "  return [[c.width, c.height], Array.from(data)]; };"
            "const [imageSize, image] = read('image'); const [maskSize, mask] = read('overlay');"
            "let opaque = 0; for (let i = 3; i < mask.length; i += 4) opaque += mask[i] > 0;"
            "return [[imageSize, maskSize], image, opaque];"
        )
    assert sizes == [[64, 48], [64, 48]] and painted == 64 * 48
    rgba = np.asarray(drawn, np.uint8).reshape(48, 64, 4)
    np.testing.assert_array_equal(rgba[..., :3], pixels)  # the picture itself, not a blank canvas


def test_uploads_in_flight_count_against_the_queue(quickstart_unet):
    """Stalled uploads used to be buffered without limit (40 of 19 MiB took 760 MiB past a 40 MiB queue): now a
    request is admitted before its body is read, so uploads past the queue get 503 at once."""
    app = create_app(Segmenter(quickstart_unet), max_concurrent=1, max_queue=1)
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        stalled = []
        try:
            for _ in range(2):  # one running place and one waiting place, both held by uploads that never end
                connection = socket.create_connection(("127.0.0.1", port))
                connection.sendall(b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Content-Type: image/png\r\nContent-Length: 1000000\r\n\r\n0123456789")
                stalled.append(connection)
            time.sleep(0.5)
            refused = httpx.post(f"{url}/v1/segment", content=png(np.zeros((8, 8, 3), np.uint8)), timeout=10)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
        finally:
            for connection in stalled:
                connection.close()
        deadline = time.monotonic() + 10  # the stalled uploads gone, their places are free again
        while time.monotonic() < deadline:
            answer = httpx.post(f"{url}/v1/segment", content=png(np.zeros((8, 8, 3), np.uint8)), timeout=10)
            if answer.status_code == 200:
                break
            time.sleep(0.1)
        assert answer.status_code == 200
