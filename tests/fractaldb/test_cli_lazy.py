"""The lazy command group: a subcommand whose import fails says why, not "No such command"."""

from __future__ import annotations

import sys

from click.testing import CliRunner

from fractaldb import cli


def test_import_error_inside_a_subcommand_is_reported_as_such(tmp_path, monkeypatch):
    # a subcommand module whose dependency is broken, as a damaged torch install would be
    (tmp_path / "broken_subcommand.py").write_text(
        "raise ImportError('libtorch_cpu.so: cannot open shared object file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.LAZY_SUBCOMMANDS, "broken", "broken_subcommand:broken")
    monkeypatch.delitem(sys.modules, "broken_subcommand", raising=False)
    runner = CliRunner()
    res = runner.invoke(cli.main, ["broken", "--help"])
    assert res.exit_code == 1, res.output
    assert "No such command" not in res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output  # one line, no traceback
    assert "importing broken_subcommand raised ImportError: libtorch_cpu.so" in lines[0]
    # the other commands still list, and the broken one shows its error in --help
    helped = runner.invoke(cli.main, ["--help"])
    assert helped.exit_code == 0, helped.output
    assert "render" in helped.output and "broken" in helped.output
    assert "unavailable" in helped.output
    # a real typo is still "No such command"
    typo = runner.invoke(cli.main, ["rendr"])
    assert typo.exit_code == 2 and "No such command" in typo.output
