"""The README's quickstart is code that runs: its python block executes on the ``ci`` profile, offline."""

from __future__ import annotations

import re

import pytest

from genqlib.paper.profiles import REPO_ROOT

README = REPO_ROOT / "README.md"


def quickstart() -> str:
    """The first fenced python block under the README's ``## Quickstart`` heading, padded with blank lines so
    a traceback's line numbers are the README's."""
    text = README.read_text()
    start = text.index("## Quickstart")
    found = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert found, "no python block under ## Quickstart"
    return "\n" * text.count("\n", 0, found.start(1)) + found.group(1)


def test_quickstart_runs(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    code = quickstart()
    assert 'get_profile("ci")' in code, "the quickstart must stay at ci size so this test stays fast"
    monkeypatch.chdir(tmp_path)  # the block writes its synthetic set under ./runs
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    top1 = float(re.search(r"'top1': ([\d.]+)", printed).group(1))
    assert 50.0 < top1 <= 100.0, printed  # a W4A4 teacher stays far above chance (10%)
    assert (tmp_path / "runs" / "quickstart" / "manifest.jsonl").exists()


def test_readme_stays_short_and_names_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 150
    assert "bash scripts/test.sh" in text and "bash scripts/run.sh" in text
    for page in ("docs/RESULTS.md", "docs/SETUP.md", "docs/QUANTIZATION.md", "docs/REPRODUCING.md"):
        assert f"]({page})" in text and (REPO_ROOT / page).exists()
