"""Shared test fixtures."""

import shutil
import tempfile

import pytest
import torch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture()
def one_thread():
    """Tiny inputs run fastest on one thread; on a loaded shared VM torch's OpenMP threads can wait several
    milliseconds per operation for a busy core (seen: 300x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, its console log kept; the test is skipped, with a message, where
    Chromium, ChromeDriver or selenium are missing. Started as root can: no sandbox, and none of the background
    connections that this machine's closed network refuses."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium / chromedriver not found: apt-get install -y chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pixelwise-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
