"""Ctrl-C during training says how to continue: re-run with --resume auto."""

from __future__ import annotations

from click.testing import CliRunner

import pretrain.engine.loop as loop
from fractaldb.cli import main

TINY = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0",
        "--data", "synthetic:4", "--epochs", "2", "--samples-per-epoch", "32"]  # fmt: skip


def test_ctrl_c_after_an_epoch_names_resume_auto(tmp_path, monkeypatch):
    real = loop.train_epoch

    def interrupted_in_the_second(run, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(run, epoch)

    monkeypatch.setattr(loop, "train_epoch", interrupted_in_the_second)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [*TINY, "--out", str(out)])
    assert res.exit_code == 130, res.output
    assert f"{out / 'last.pt'} holds the last finished epoch" in res.output
    assert "re-run the same command with --resume auto" in res.output
    assert "Aborted." in res.output and "Traceback" not in res.output
    monkeypatch.setattr(loop, "train_epoch", real)
    again = CliRunner().invoke(main, [*TINY, "--out", str(out), "--resume", "auto"])
    assert again.exit_code == 0 and "resumed from" in again.output, again.output
