"""The one progress bar: drawn on a terminal or when asked, silent when told, never on stdout."""

from __future__ import annotations

import logging

import pytest

from casebase.progress import progress_bar


def test_enabled_bar_draws_on_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(10, desc="embedding", enabled=True) as bar:
        bar.update(4)
        bar.update(6)
        bar.set_postfix(loss="0.1234")
    out, err = capsys.readouterr()
    assert out == ""
    assert "embedding" in err and "10/10" in err and "img" in err, err
    assert bar.count == 10


@pytest.mark.parametrize("enabled", [False, None])
def test_silenced_or_not_a_terminal_draws_nothing(
    enabled: bool | None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``None`` draws only on a terminal; pytest's captured stderr is not one."""
    bar = progress_bar(5, desc="reembed", enabled=enabled)
    bar.update(5)
    bar.set_postfix(loss="1")
    bar.close()
    bar.close()  # idempotent
    assert capsys.readouterr() == ("", "")
    assert bar.count == 5


def test_empty_total_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(0, desc="embedding", enabled=True)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_close_logs_count_and_rate(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="casebase.progress"):
        with progress_bar(3, desc="epoch 1", unit="batch", enabled=False) as bar:
            bar.update(3)
    (record,) = [r for r in caplog.records if r.name == "casebase.progress"]
    assert record.getMessage().startswith("epoch 1: 3 batch in "), record.getMessage()
    assert "batch/s" in record.getMessage()
