"""The controls work in a real browser: JupyterLab on a free port with a token, Debian's Chromium driven by
Playwright, notebooks run at profile=ci as a user runs them (Run > Run All Cells), controls moved with the
mouse and the keyboard.

Screenshots of every step go to the test's tmp folder; their paths are printed (pytest shows them when a test
fails). Skipped, with the reason, only where Playwright or a Chromium executable is missing
(``bash scripts/setup.sh dev`` installs both where apt-get runs as root; ``GENQ_CHROMIUM`` names another one).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from figure_check import KIND, pixel_shares, shows_data

from genqlib.paper.profiles import REPO_ROOT

pytestmark = pytest.mark.browser

NOTEBOOKS = REPO_ROOT / "notebooks"
RUN_TIMEOUT_MS = 600_000  # a whole notebook at profile=ci, kernel start included (generous: CI is shared)
UPDATE_TIMEOUT_MS = 120_000  # one redraw after a control moved


def chromium_path() -> str | None:
    path = os.environ.get("GENQ_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parameterized(name: str, folder: Path, **parameters) -> Path:
    """A copy of notebook ``name`` with papermill's injected-parameters cell, as papermill would run it."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOKS / name)), parameters)
    path = folder / name
    nbformat.write(nb, path)
    return path


def copy_executed(folder: Path) -> list[str]:
    """The executed copies under figures/ (ci: figures/ci/<nb>/<nb>.ipynb, what CI has; mini:
    figures/<nb>/<nb>.ipynb where committed) copied to ``folder`` as they lie, made read-only as scripts/lab.sh
    makes them; their paths relative to ``folder``'s parent (the lab's root)."""
    from genqlib.paper.executed_copies import executed_copies, make_read_only

    figures = REPO_ROOT / "figures"
    for path in executed_copies(figures):
        target = folder / path.relative_to(figures)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return [str(p.relative_to(folder.parent)) for p in make_read_only(folder)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory, shared_work_dir):
    """(base URL, token, folder): JupyterLab serving parameterized copies of 02 and 04, this checkout's
    genqlib on the kernel's path; stopped (kernels included) after the module's tests. The notebooks use the
    session's work folder, so after tests/test_notebooks.py their synthetic set and PTQ runs are cached."""
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed (pip install playwright)"
    )
    chromium = chromium_path()
    if chromium is None:
        pytest.skip(
            "no Chromium executable: bash scripts/setup.sh dev installs Debian's (apt-get install chromium, "
            "as root); or set GENQ_CHROMIUM to one"
        )
    root = tmp_path_factory.mktemp("lab")
    common = {"profile": "ci", "figures_dir": str(root / "figures"), "work_dir": str(shared_work_dir)}
    parameterized("02_filter.ipynb", root, **common)
    parameterized(
        "04_ptq.ipynb",
        root,
        **common,
        teachers=[
            "resnet"
        ],  # 6 PTQ runs: nearest, real, noise x 2 bits (the paper's widths, not ci's default)
        sources=["real", "noise"],
        bits=[[4, 4], [2, 4]],
    )
    executed = copy_executed(root / "executed")
    port, token = free_port(), "genq-browser-test"
    home = root / "jupyter"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO_ROOT), str(REPO_ROOT / "scripts"), os.environ.get("PYTHONPATH")])
        ),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),  # `jupyter server list` (scripts/lab.sh) never sees it
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_DATA_DIR": str(home / "data"),  # its notebook-signing key, not the user's
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=",
        # as scripts/lab.sh serves it: a file without write bits is read-only, also for root
        "--ServerApp.contents_manager_class=lab_contents.ModeBitsFileManager",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")  # noqa: SIM115 (closed at teardown)
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # a shared 2-core machine can take minutes
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start; log: {root / 'jupyterlab.log'}")
            time.sleep(0.5)
        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            yield {
                "base": base,
                "token": token,
                "root": root,
                "browser": browser,
                "work_dir": shared_work_dir,
                "executed": executed,
            }
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


class Steps:
    """Screenshots of each step, named in order, under the test's tmp folder; paths printed as saved.
    Used as a context manager, it also saves the page as it was when a step failed."""

    def __init__(self, page, folder: Path) -> None:
        self.page, self.folder, self.n, self.paths = page, folder, 0, []

    def shot(self, name: str, element=None) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        (element or self.page).screenshot(path=str(path))
        self.paths.append(path)
        print(f"screenshot: {path}")
        return path

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is not None:
            self.shot("failed")
            print("screenshots of this test:\n" + "\n".join(str(p) for p in self.paths))


def new_page(lab, tmp_path: Path):
    page = lab["browser"].new_page(viewport={"width": 1500, "height": 1000})
    return page, Steps(page, tmp_path)


@pytest.fixture(autouse=True)
def shutdown_kernels(request):
    """After each test, shut down the kernels it started (the next notebook gets the CPU to itself)."""
    yield
    if "lab" not in request.fixturenames:
        return
    lab = request.getfixturevalue("lab")
    api = f"{lab['base']}/api/kernels"
    headers = {"Authorization": f"token {lab['token']}"}
    with urllib.request.urlopen(urllib.request.Request(api, headers=headers), timeout=10) as r:
        kernels = json.load(r)
    for kernel in kernels:
        delete = urllib.request.Request(f"{api}/{kernel['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(delete, timeout=30).close()


def open_and_run(lab, name: str, page, steps: Steps) -> None:
    """Open notebook ``name`` in JupyterLab, wait for its kernel, Run > Run All Cells."""
    # a fresh workspace of its own, so JupyterLab does not restore another test's open notebook
    workspace = Path(name).stem.replace("_", "-")
    page.goto(f"{lab['base']}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab['token']}")
    current = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current .lm-TabBar-tabLabel").first
    page.wait_for_function(
        """(name) => [...document.querySelectorAll('#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current')]
                     .some(t => t.textContent.includes(name))""",
        arg=name,
        timeout=60_000,
    )
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell").first.wait_for(timeout=60_000)
    assert current.inner_text() == name
    page.wait_for_function(  # the status bar reads "Python 3 (ipykernel) | Idle" once the kernel is up
        "() => (document.querySelector('#jp-main-statusbar')?.textContent || '').includes('| Idle')",
        timeout=120_000,
    )
    steps.shot("opened")
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(  # it started: some prompt shows [*] or a number
        "() => [...document.querySelectorAll('.jp-InputArea-prompt')].some(p => /\\[[*0-9]/.test(p.textContent))",
        timeout=60_000,
    )


def wait_done(page) -> None:
    """Every cell ran: no prompt shows [*] and the kernel is idle."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('.jp-InputArea-prompt')].every(p => !p.textContent.includes('*'))
              && document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']") !== null""",
        timeout=RUN_TIMEOUT_MS,
    )


def panel_state(page, name: str) -> dict:
    summary = page.locator(f".genq-{name} .genq-summary").first
    return {
        "summary": summary.inner_text(),
        "draw": summary.locator(".genq-draw").get_attribute("data-draw"),
        "src": page.locator(f".genq-{name} .genq-figure").first.get_attribute("src"),
    }


def wait_redraw(page, name: str, before: dict) -> dict:
    """Wait until the panel drew again (its draw counter moved and the figure is a new image)."""
    page.wait_for_function(
        """([name, draw, src]) => {
            const d = document.querySelector(`.genq-${name} .genq-summary .genq-draw`);
            const img = document.querySelector(`.genq-${name} .genq-figure`);
            return d && img && d.dataset.draw !== draw && img.getAttribute('src') !== src;
        }""",
        arg=[name, before["draw"], before["src"]],
        timeout=UPDATE_TIMEOUT_MS,
    )
    return panel_state(page, name)


def test_filter_explorer_in_jupyterlab(lab, tmp_path):
    """02 run in JupyterLab; dragging the energy slider changes the kept count and the kept/rejected grid."""
    page, steps = new_page(lab, tmp_path)
    with steps:
        open_and_run(lab, "02_filter.ipynb", page, steps)
        panel = page.locator(".genq-filter").first
        panel.wait_for(timeout=RUN_TIMEOUT_MS)
        wait_done(page)
        panel.scroll_into_view_if_needed()
        steps.shot("ran")
        steps.shot("explorer-default", panel)
        before = panel_state(page, "filter")
        kept_before = int(re.search(r"kept (\d+) of (\d+)", before["summary"]).group(1))

        slider = page.locator(".genq-filter-energy_drop").first
        handle = slider.locator(".noUi-handle").first
        track = slider.locator(".noUi-target").first
        box, hbox = track.bounding_box(), handle.bounding_box()
        page.mouse.move(hbox["x"] + hbox["width"] / 2, hbox["y"] + hbox["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7 / 0.9, hbox["y"] + hbox["height"] / 2, steps=8)
        page.mouse.up()
        after = wait_redraw(page, "filter", before)
        steps.shot("explorer-energy-moved", panel)
        kept_after = int(re.search(r"kept (\d+) of (\d+)", after["summary"]).group(1))
        readout = slider.locator(".widget-readout").first.inner_text()
        assert float(readout.rstrip("%")) > 30, f"the slider moved to {readout}"  # a share, shown in %
        assert kept_after < kept_before, (before["summary"], after["summary"])
        assert after["src"] != before["src"]
        page.close()


def test_ptq_explorer_pickers_in_jupyterlab(lab, tmp_path):
    """04 run in JupyterLab; the bits, source and method pickers change the table and the plot from the
    cache, and a run that is not cached is computed only when the button is pressed."""
    for done in (Path(lab["work_dir"]) / "ptq").glob("resnet-w2a4-qdrop-real-*.json"):
        done.unlink()  # the run this test asks for, left by an earlier session sharing the work folder
    page, steps = new_page(lab, tmp_path)
    with steps:
        open_and_run(lab, "04_ptq.ipynb", page, steps)
        panel = page.locator(".genq-ptq").first
        panel.wait_for(timeout=RUN_TIMEOUT_MS)
        wait_done(page)
        panel.scroll_into_view_if_needed()
        steps.shot("ran")
        steps.shot("explorer-default", panel)
        table = page.locator(".genq-ptq .genq-ptq-table").first
        state = panel_state(page, "ptq")
        # the default selection is one that has runs (the widths with the most cached runs)
        assert "not computed" not in state["summary"] and table.locator("tbody tr").count() > 0

        page.locator(".genq-ptq-bits_label select").first.select_option("W4A4")
        state = wait_redraw(page, "ptq", state)
        assert "resnet W4A4 brecq" in state["summary"] and "not computed" not in state["summary"]
        assert set(table.locator("tbody td:nth-child(2)").all_inner_texts()) == {"4"}
        assert table.locator("tbody td:nth-child(5)").all_inner_texts() == ["real", "real", "noise"]

        page.locator(".genq-ptq-bits_label select").first.select_option("W2A4")
        state = wait_redraw(page, "ptq", state)
        steps.shot("bits-W2A4", panel)
        assert "resnet W2A4 brecq" in state["summary"]
        assert set(table.locator("tbody td:nth-child(2)").all_inner_texts()) == {"2"}  # w_bits

        page.locator(".genq-ptq-sources select").first.select_option(["real"])
        state = wait_redraw(page, "ptq", state)
        steps.shot("source-real-only", panel)
        assert table.locator("tbody td:nth-child(5)").all_inner_texts() == ["real", "real"]

        page.locator(".genq-ptq-method select").first.select_option("qdrop")
        state = wait_redraw(page, "ptq", state)
        steps.shot("method-qdrop-not-cached", panel)
        button = page.locator(".genq-ptq-compute").first
        assert "1 not computed (real)" in state["summary"] and "qdrop" not in table.inner_text()
        assert button.is_enabled()

        button.click()
        state = wait_redraw(page, "ptq", state)
        steps.shot("qdrop-computed", panel)
        assert "not computed" not in state["summary"]
        assert table.locator("tbody td:nth-child(4)").all_inner_texts() == ["nearest", "qdrop"]
        assert button.is_disabled()
        page.close()


def explorer_figures(notebook: dict) -> list[tuple[int, str, bytes]]:
    """(index among the copy's image outputs, panel kind, saved PNG) of each explorer output. An executed copy
    opened without a kernel (and untrusted, as every copy from another machine is) shows an explorer as its
    ``image/png`` fallback, the panel's default figure: what a learner sees and what must show data."""
    state = notebook["metadata"].get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    found, images = [], 0
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            view = data.get("application/vnd.jupyter.widget-view+json")
            if view:
                classes = models.get(view["model_id"], {}).get("state", {}).get("_dom_classes", [])
                kinds = [c.removeprefix("genq-") for c in classes if c.removeprefix("genq-") in KIND]
                if kinds:
                    found.append((images, kinds[0], base64.b64decode(data["image/png"])))
            images += 1
    return found


RENDERED_IMAGES = """() => [...document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img')]
    .filter(img => img.complete && img.naturalWidth > 0).map(img => img.src)"""


def test_executed_copies_open_read_only_with_every_explorer_figure_drawn(lab, tmp_path):
    """Each executed copy under figures/ opens in JupyterLab read-only (the toolbar says so and Save is
    refused), and every explorer's default figure, as JupyterLab draws it from the copy (its PNG fallback),
    is the saved one and shows data (tests/figure_check.py: an empty axis fails)."""
    if not lab["executed"]:
        pytest.skip("no executed copy under figures/ (python -m genqlib.paper.run_notebooks makes them)")
    page, steps = new_page(lab, tmp_path)
    empty = []
    with steps:
        for i, rel in enumerate(lab["executed"]):
            page.goto(f"{lab['base']}/lab/workspaces/executed-{i}/tree/{rel}?reset&token={lab['token']}")
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").first
            notebook.locator(".jp-Cell").first.wait_for(timeout=60_000)
            indicator = notebook.locator('[data-jp-item-name="read-only-indicator"]').first
            indicator.wait_for(timeout=30_000)
            assert "read-only" in indicator.inner_text(), (rel, indicator.inner_text())
            copy = Path(lab["root"]) / rel
            saved = copy.stat().st_mtime_ns
            notebook.locator(".jp-Cell").first.click()
            page.keyboard.press("Control+s")  # refused: JupyterLab offers only "Save as…"
            panels = explorer_figures(json.loads(copy.read_text()))
            if panels:
                page.wait_for_function(
                    f"(n) => ({RENDERED_IMAGES})().length > n", arg=panels[-1][0], timeout=60_000
                )
                shown = page.evaluate(RENDERED_IMAGES)
                for index, panel, png in panels:
                    drawn = base64.b64decode("".join(shown[index].split(",", 1)[-1].split()))
                    assert drawn == png, (rel, panel, index)  # the explorer's saved figure, drawn
                    if not shows_data(png, panel):
                        empty.append(f"{rel} {panel}: {pixel_shares(png)}")
                steps.shot(Path(rel).stem)
            assert copy.stat().st_mtime_ns == saved, f"{rel} was saved over"
        page.close()
    assert empty == [], empty
