"""Progress bars: on for the command line, off under the book runner."""

from paperlib.progress import PROGRESS_ENV, progress_enabled, tqdm


def test_progress_env_switches_every_bar_off(monkeypatch, capsys):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_enabled()
    assert not tqdm(range(3), disable=False).disable
    assert tqdm(range(3), disable=True).disable  # the caller's choice stands when bars are on
    for off in ("0", "false", "OFF", " no "):
        monkeypatch.setenv(PROGRESS_ENV, off)
        assert not progress_enabled()
        bar = tqdm(range(3), desc="x", disable=False)  # even an explicit disable=False
        assert bar.disable and list(bar) == [0, 1, 2]
    assert "x:" not in capsys.readouterr().err
    monkeypatch.setenv(PROGRESS_ENV, "1")
    assert progress_enabled()
