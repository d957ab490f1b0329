"""``pixelwise explain``: the topic list, the files it writes, its errors, and index.html in headless Chromium."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from pixelwise.cli import main
from pixelwise.explain import TOPICS, check_topics, list_topics
from pixelwise.explain.gallery import run_gallery

CHEAP_TOPICS = ["atrous-receptive-fields", "aspp"]  # exact computations, under a second each


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which strict JSON forbids")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_list_prints_every_available_topic_with_its_description(capsys):
    assert main(["explain", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [name for name, _ in list_topics()]
    assert [line.split()[0] for line in lines] == names
    assert names == [name for name in TOPICS if name in names]  # lecture order
    assert {"convolutionalization", "upsampling", "fcn-skips", "atrous-receptive-fields", "separable-convolution",
            "aspp"} <= set(names)
    assert all(description for _, description in list_topics())
    assert "Receptive fields of three stacked 3x3 atrous convolutions" in "\n".join(lines)


def test_one_topic_writes_figures_numbers_and_index(tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["explain", "atrous-receptive-fields", "--out", str(out)]) == 0
    assert "wrote 1 topic in" in capsys.readouterr().out
    numbers = strict_json(out / "atrous-receptive-fields" / "numbers.json")
    assert [stack["receptive_field"] for stack in numbers["stacks"]] == [7, 13, 17]
    page = (out / "index.html").read_text()
    images = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)"', page)
    assert [source for source, _, _ in images] == ["atrous-receptive-fields/gradient_maps.png"]
    for source, width, height in images:
        with Image.open(out / source) as image:
            assert image.size == (int(width), int(height))
    assert "pixelwise/nn/conv.py: atrous_conv3x3" in page
    assert "aspp" not in re.findall(r'<section id="([^"]+)"', page)


def test_a_later_run_adds_to_the_gallery_and_the_index_follows_the_folder(tmp_path):
    out = tmp_path / "gallery"
    run_gallery(["aspp", "upsampling"], out, progress=False)
    run_gallery(["atrous-receptive-fields", "aspp"], out, progress=False, seed=1)
    page = (out / "index.html").read_text()
    # Every topic folder is in the index, in the lecture's order; no staging folder is left behind.
    assert re.findall(r'<section id="([^"]+)"', page) == ["upsampling", "atrous-receptive-fields", "aspp"]
    assert sorted(path.name for path in out.iterdir()) == ["aspp", "atrous-receptive-fields", "index.html",
                                                            "upsampling"]


def test_data_and_seed_are_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "gallery"
    assert main(["explain", "aspp", "--out", str(out), "--data", "camvid:/nonexistent"]) == 2
    assert "--data is used by the dense-crf topic only" in capsys.readouterr().err
    assert main(["explain", "aspp", "dense-crf", "--out", str(out), "--data", "voc:/tmp"]) == 2
    assert "give camvid:ROOT, ROOT holding CamVid's train/" in capsys.readouterr().err
    assert not out.exists()  # nothing computed, nothing written
    for seed in ("-1", str(2**32), "1.5"):
        with pytest.raises(SystemExit):
            main(["explain", "aspp", "--out", str(out), "--seed", seed])
    assert main(["explain", "aspp", "--out", ""]) == 2


def test_bad_topic_and_bad_out_are_one_line_errors(tmp_path, capsys):
    assert main(["explain", "upsampling", "convolution", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("pixelwise explain: error: unknown topic 'convolution'; choose from convolutionalization")
    assert error.count("\n") == 1
    assert main(["explain", "aspp"]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["explain", "aspp", "--out", str(blocker / "gallery")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/*.png"))


def test_check_topics_keeps_order_and_defaults_to_all():
    assert check_topics(["aspp", "upsampling", "aspp"]) == ["aspp", "upsampling"]
    assert check_topics([]) == [name for name, _ in list_topics()]


def test_index_opens_in_headless_chromium_with_every_image_loaded(browser, tmp_path):
    run_gallery(CHEAP_TOPICS, tmp_path / "gallery", progress=False)
    browser.get((tmp_path / "gallery" / "index.html").as_uri())
    widths = browser.execute_script(
        "return Array.from(document.images).map(image => image.complete ? image.naturalWidth : 0);")
    sections = browser.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id);")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert sections == CHEAP_TOPICS
    assert len(widths) == 3 and all(width > 0 for width in widths), widths
    assert errors == []
