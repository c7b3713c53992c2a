"""Under CI a missing browser fails the real-browser test; locally it skips with the fix."""

from __future__ import annotations

import pytest

from .conftest import missing


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_browser_fails_under_ci(monkeypatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        missing("/usr/bin/chromium is missing")


def test_missing_browser_skips_locally(monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        missing("/usr/bin/chromium is missing")
