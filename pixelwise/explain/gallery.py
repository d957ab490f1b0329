"""The gallery: run topics under a progress bar, write their figures, numbers and one ``index.html``.

``OUT/<topic>/<figure>.png`` (exact pixel size), ``OUT/<topic>/numbers.json`` (strict JSON) and
``OUT/index.html``, which references the PNGs by relative path and needs nothing else: no script, no
stylesheet or font from elsewhere.

A topic's folder is written whole beside it, then swapped in, and the index is rebuilt after every topic from
every topic folder in ``OUT`` (its ``section.html``): a later run of other topics adds to a gallery, and a run
stopped half-way leaves each topic's files and its section from one and the same run.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from pixelwise.explain import TOPICS, check_topics, list_topics
from pixelwise.explain.base import Explained, figure_pixels, save_figure
from pixelwise.fileio import atomic_write, check_output_dir, strict_json

STYLE = """
body { font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }
section { border-top: 1px solid #ccc; padding-top: 1em; margin-top: 2em; }
.row { display: flex; gap: 1.5em; align-items: flex-start; flex-wrap: wrap; }
figure { margin: 0 0 1em 0; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 12px; max-height: 40em; overflow: auto; flex: 1 1 320px; }
.source { font-family: monospace; color: #555; }
"""


def run_topic(name: str, data: str | None = None, seed: int = 0) -> Explained:
    """Topic ``name`` (its command-line spelling) at its default settings; ``data`` goes to topics taking it."""
    module = TOPICS[name]
    function = getattr(importlib.import_module(f"pixelwise.explain.{module}"), module)
    options = {"data": data} if data is not None and "data" in inspect.signature(function).parameters else {}
    return function(seed=seed, **options)


def write_topic(name: str, description: str, result: Explained, folder: Path) -> None:
    """``result``'s figures, ``numbers.json`` and ``section.html`` (its part of the index) as ``folder``.

    Written into a staging folder beside it, then swapped in: the folder holds one run's files, never a mix."""
    stage = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        written = []
        for stem, figure in result.figures.items():
            save_figure(figure, stage / f"{stem}.png")
            written.append((f"{stem}.png", figure_pixels(figure)))
            # Drop the artists now: the gallery's figures would otherwise all stay in memory until the end.
            figure.clear()
        with atomic_write(stage / "numbers.json", "w") as file:
            json.dump(strict_json(result.numbers), file, indent=2, allow_nan=False)
            file.write("\n")
        with atomic_write(stage / "section.html", "w") as file:
            file.write(topic_html(name, description, result, written))
    except BaseException:  # Ctrl-C or a failure: no half-written topic is left behind
        shutil.rmtree(stage, ignore_errors=True)
        raise
    retired = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(retired, ignore_errors=True)
    if folder.exists():
        folder.rename(retired)
    stage.rename(folder)
    shutil.rmtree(retired, ignore_errors=True)


def topic_html(name: str, description: str, result: Explained, figures: list[tuple[str, tuple[int, int]]]) -> str:
    images = "".join(
        f'<figure><img src="{html.escape(name)}/{html.escape(file)}" width="{width}" height="{height}" '
        f'alt="{html.escape(file)}"><figcaption>{html.escape(file)}</figcaption></figure>'
        for file, (width, height) in figures
    )
    numbers = html.escape(json.dumps(strict_json(result.numbers), indent=2, allow_nan=False))
    return (
        f'<section id="{html.escape(name)}"><h2>{html.escape(name)}</h2>'
        f"<p><em>{html.escape(description)}</em></p><p>{html.escape(result.caption)}</p>"
        f'<p class="source">Computed by {html.escape(result.source)}</p>'
        f'<div class="row"><div>{images}</div><pre>{numbers}</pre></div></section>'
    )


def write_index(out_dir: Path) -> list[str]:
    """``out_dir/index.html`` from the sections of every topic folder in it, in the lecture's order; returns
    the topics it shows."""
    sections = [(name, (out_dir / name / "section.html").read_text(encoding="utf-8")) for name in TOPICS
                if (out_dir / name / "section.html").is_file()]
    contents = "".join(f'<li><a href="#{html.escape(name)}">{html.escape(name)}</a></li>' for name, _ in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>pixelwise: the lecture</title>'
        '<link rel="icon" href="data:,">'  # no favicon request: the page loads nothing but its figures
        f"<style>{STYLE}</style></head><body><h1>pixelwise: the lecture, computed</h1>"
        "<p>Every figure and number below was computed by <code>pixelwise explain</code> from the library's own "
        f"modules.</p><ul>{contents}</ul>{''.join(section for _, section in sections)}</body></html>\n"
    )
    with atomic_write(out_dir / "index.html", "w") as file:
        file.write(page)
    return [name for name, _ in sections]


def run_gallery(topics: Sequence[str], out_dir: str | os.PathLike, data: str | None = None,
                progress: bool = True, seed: int = 0) -> dict[str, float]:
    """Run ``topics`` (all when empty) and write the gallery into ``out_dir``; returns seconds per topic.

    ``data`` (e.g. ``"camvid:ROOT"``) goes to the topics that can use a real image; the others ignore it.
    """
    names = check_topics(topics)
    out_dir = check_output_dir(out_dir, "--out")
    # A topic's folder is replaced whole: a folder of the same name that this command did not write is the user's.
    theirs = [name for name in names if (out_dir / name).exists() and not (out_dir / name / "section.html").is_file()]
    if theirs:
        raise ValueError(f"--out {out_dir} holds {', '.join(theirs)}, which a topic would replace; pick another --out")
    descriptions = dict(list_topics())
    seconds: dict[str, float] = {}
    bar = tqdm(names, desc="explain", unit="topic", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        result = run_topic(name, data, seed)
        write_topic(name, descriptions[name], result, out_dir / name)
        write_index(out_dir)
        seconds[name] = time.perf_counter() - start
    return seconds
