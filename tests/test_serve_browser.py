"""The web page in real headless Chromium: choose an image, see the overlay, the legend and the slider work."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pixelwise import Segmenter, create_model, save_model
from pixelwise.serve import create_app
from pixelwise.serve.background import serve_in_thread


def test_choosing_an_image_shows_the_overlay(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    torch.manual_seed(0)
    save_model(create_model("unet", 3, base_channels=4, depth=2), tmp_path / "run", class_names=["a", "b", "c"],
               palette=[[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    picture = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(picture)

    with serve_in_thread(create_app(Segmenter(tmp_path / "run"))) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#legend li")) == 3)
        browser.find_element(By.ID, "file").send_keys(str(picture))
        wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-state") in ("done", "error"))
        overlay = browser.find_element(By.ID, "overlay")
        assert overlay.get_attribute("data-state") == "done", browser.find_element(By.ID, "status").text
        size, painted = browser.execute_script(
            "const c = document.getElementById('overlay');"
            "const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let opaque = 0; for (let i = 3; i < data.length; i += 4) opaque += data[i] > 0;"
            "return [[c.width, c.height], opaque];"
        )
        assert size == [64, 48] and painted == 64 * 48  # every pixel of the mask drawn
        browser.execute_script(
            "const s = document.getElementById('opacity'); s.value = '0.8';"
            "s.dispatchEvent(new Event('input'));"
        )
        assert overlay.value_of_css_property("opacity") == "0.8"
