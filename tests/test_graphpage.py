"""The graph page in a real browser: the system's headless Chromium driven by Playwright (no browser download)."""

import os
import shutil

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.browser


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.fc(x)) * 0.5 + x


class Deep(torch.nn.Module):
    """750 repeated blocks of 4 ATen nodes: a 3,000-node graph."""

    def __init__(self, blocks: int = 750) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block() for _ in range(blocks))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (.ci/run installs it)")
        pytest.skip("no chromium here (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, path):
    """The page, with every console error and every request other than the file itself recorded."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors, fetched = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: fetched.append(r.url) if r.url != path.as_uri() else None)
    page.goto(path.as_uri())
    return page, errors, fetched


def _click(page, name):
    at = page.evaluate(f"opmapGraph.zoomTo({name!r}, 1), opmapGraph.locate({name!r})")
    page.mouse.click(at["x"], at["y"])
    return at


def test_detector_page_draws_every_node_and_opens_verdicts(cli, detector_pt2, browser, tmp_path):
    path = tmp_path / "detector.html"
    assert cli("suggest", detector_pt2, "--html", path).code == 0
    page, errors, fetched = _open(browser, path)
    total = page.evaluate("opmapGraph.total")
    assert total == 27 + 1  # 27 ATen nodes and the image input
    assert page.evaluate("opmapGraph.drawnNodes()") == total
    _click(page, "fractional_max_pool2d")
    assert page.inner_text("#node-title") == "fractional_max_pool2d"
    verdicts = page.inner_text("#verdicts")
    assert "APPLIES fmp/exact-samples" in verdicts and "NOT_APPLICABLE" in verdicts
    _click(page, "nonzero")
    assert page.inner_text("#node-title") == "nonzero" and "nonzero/static-bound" in page.inner_text("#details")
    page.evaluate("document.getElementById('fit').click()")
    # the README's picture is refreshed only on request (OPMAP_UPDATE_PICTURES=1): a test run leaves the tree clean
    shot = ROOT / "bench" / "plan-graph.png" if os.environ.get("OPMAP_UPDATE_PICTURES") == "1" else tmp_path / "plan-graph.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    assert not errors and not fetched


def test_three_thousand_nodes_grouped_expanded_and_clicked(cli, browser, tmp_path):
    from tests.conftest import export_to

    model = export_to(tmp_path / "deep.pt2", Deep(), torch.randn(2, 8))
    path = tmp_path / "deep.html"
    assert cli("suggest", model, "--html", path, "--no-record").code == 0
    page, errors, fetched = _open(browser, path)
    assert page.evaluate("opmapGraph.total") == 3001
    assert page.evaluate("opmapGraph.units()") == 750 + 1  # collapsed: one unit per block, and the input
    at = _click(page, "linear_10")  # a click on a collapsed group expands it
    assert at["grouped"] and page.evaluate("opmapGraph.units()") == 750 + 4
    _click(page, "linear_10")
    assert page.inner_text("#node-title") == "linear_10" and "APPLIES" in page.inner_text("#verdicts")
    page.evaluate("opmapGraph.expandAll()")
    assert page.evaluate("opmapGraph.units()") == 3001 and page.evaluate("opmapGraph.drawnNodes()") == 3001
    assert not errors and not fetched
