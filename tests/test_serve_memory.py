"""Memory per request stays within what the server advertises, whatever the image size; abandoned requests
are not run."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from pixelwise import Segmenter, create_model
from pixelwise.infer.memory import peak_bytes_of, plan_memory
from pixelwise.serve import create_app
from pixelwise.serve.background import serve_in_thread


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return create_model("unet", 3, base_channels=4, depth=2).eval()


def test_large_images_run_window_by_window_with_the_same_answer_as_slide_mode(unet):
    pixels = np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    slide = Segmenter(unet, mode="slide", tile=(32, 32)).predict_proba(pixels)
    whole = Segmenter(unet).predict_proba(pixels)
    bounded = Segmenter(unet, tile=(32, 32), whole_up_to=70 * 90 - 1).predict_proba(pixels)
    np.testing.assert_allclose(bounded, slide, atol=1e-6)
    assert not np.allclose(bounded, whole, atol=1e-4)  # the switch really happened
    np.testing.assert_allclose(Segmenter(unet, whole_up_to=70 * 90).predict_proba(pixels), whole, atol=1e-6)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_request_at_the_limit_stays_within_the_advertised_memory(unet):
    """The real server on a 96 MiB budget: an image at its pixel limit is answered within the memory it
    advertises (measured in this process, which runs the server), one pixel row more gets 413."""
    segmenter = Segmenter(unet, tile=(128, 128))
    plan = plan_memory(segmenter, request_bytes=96 << 20, max_concurrent=1)
    if not plan.measured:
        pytest.skip("peak memory cannot be read on this system (needs Linux /proc/self/clear_refs)")
    assert plan.whole_up_to < plan.max_pixels  # images near the limit must run window by window
    side = int(plan.max_pixels**0.5)
    ramp = np.linspace(0, 255, side).astype(np.uint8)  # smooth: a small upload, like the 26 KB PNG
    pixels = np.ascontiguousarray(np.stack([np.broadcast_to(ramp, (side, side))] * 3, axis=-1))
    with serve_in_thread(create_app(segmenter, memory=plan)) as url:
        advertised = httpx.get(f"{url}/v1/model").json()["card"]["limits"]["memory"]
        assert advertised["request_bytes"] == plan.request_bytes and advertised["max_pixels"] == plan.max_pixels
        body = png(pixels)
        replies = []
        used = peak_bytes_of(lambda: replies.append(httpx.post(
            f"{url}/v1/segment", content=body, headers={"content-type": "image/png"}, timeout=300)))
        too_big = httpx.post(f"{url}/v1/segment", content=png(np.zeros((side + 1, side + 1, 3), np.uint8)),
                             headers={"content-type": "image/png"}, timeout=60)
    assert replies[0].status_code == 200
    assert used <= plan.request_bytes, (used / 2**20, plan)
    assert too_big.status_code == 413 and "--max-pixels" in too_big.json()["error"]
    # The same image whole would have needed more than the budget: the bound is doing the work.
    assert plan.whole_bytes_per_pixel * side * side > plan.request_bytes


def test_requests_whose_client_left_are_not_run(unet):
    segmenter = Segmenter(unet)
    calls = []
    original = segmenter.predict

    def slow(image):
        calls.append(time.monotonic())
        time.sleep(0.6)
        return original(image)

    segmenter.predict = slow
    # Over a megabyte of upload: uvicorn pauses reading such a body, so the server learns that a client left
    # only if it listens for it.
    body = png(np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8))
    app = create_app(segmenter, max_concurrent=1)
    with serve_in_thread(app) as url:
        def post(timeout: float) -> None:
            try:
                httpx.post(f"{url}/v1/segment", content=body, headers={"content-type": "image/png"}, timeout=timeout)
            except httpx.TimeoutException:
                pass  # this client gives up

        first = threading.Thread(target=post, args=(10.0,))
        first.start()
        time.sleep(0.2)  # the first request holds the only slot
        quitters = [threading.Thread(target=post, args=(0.2,)) for _ in range(5)]
        for thread in quitters:
            thread.start()
        for thread in quitters:
            thread.join()
        first.join()
        response = httpx.post(f"{url}/v1/segment", content=body, headers={"content-type": "image/png"}, timeout=30)
    assert response.status_code == 200
    assert len(calls) == 2, calls  # the first request and the last: none of the five abandoned ones ran
