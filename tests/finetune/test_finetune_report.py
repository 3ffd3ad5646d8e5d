"""results.json bookkeeping and `fractaldb report` output."""

from __future__ import annotations

import json

from click.testing import CliRunner

from finetune.cli import report
from finetune.results import new_results, record_epoch, write_results


def make_run(path, dataset, source, accs):
    r = new_results(
        dataset=dataset,
        model="vit_tiny",
        init={"source": source},
        recipe="deit-cifar-sgd",
        epochs=len(accs),
    )
    for e, (t1, t5) in enumerate(accs, start=1):
        record_epoch(r, e, {"top1": t1, "top5": t5, "loss": 1.0})
    write_results(path, r)
    return path


def test_best_and_last_tracking(tmp_path):
    make_run(tmp_path / "a", "cifar10", "scratch", [(10, 50), (30, 70), (20, 90)])
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    assert r["best"] == {"epoch": 2, "top1": 30.0, "top5": 70.0}
    assert r["last"] == {"epoch": 3, "top1": 20.0, "top5": 90.0}
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3] and r["epochs_done"] == 3


def test_report_table_and_chart(tmp_path):
    runs = [
        make_run(
            tmp_path / "c10-frac", "cifar10", str(tmp_path / "runs" / "deit-frac1k"), [(91.5, 99.0)]
        ),
        make_run(tmp_path / "c10-scr", "cifar10", "scratch", [(70.25, 95.0), (60.0, 94.0)]),
        make_run(tmp_path / "pets-frac", "pets", "weights.safetensors", [(40.0, 80.0)]),
    ]
    md, png = tmp_path / "out" / "t.md", tmp_path / "out" / "c.png"
    res = CliRunner().invoke(report, [*map(str, runs), "--out-md", str(md), "--out-png", str(png)])
    assert res.exit_code == 0, res.output
    lines = md.read_text().splitlines()
    assert lines[0].startswith(
        "| init | dataset | model | recipe | epochs | best top-1 | last top-1"
    )
    assert lines[2].startswith(
        "| deit-frac1k | cifar10 | vit_tiny | deit-cifar-sgd | 1/1 | 91.50 | 91.50 | 99.00 |"
    )
    assert lines[3].startswith(
        "| scratch | cifar10 | vit_tiny | deit-cifar-sgd | 2/2 | 70.25 | 60.00 | 95.00 |"
    )
    assert lines[4].startswith("| weights.safetensors | pets |")
    assert md.read_text() in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_report_bad_input_is_one_line(tmp_path):
    res = CliRunner().invoke(report, [str(tmp_path / "missing")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "missing does not exist" in res.output
    (tmp_path / "unfinished").mkdir()
    res = CliRunner().invoke(report, [str(tmp_path / "unfinished")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "no results.json in" in res.output and "unfinished" in res.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    res = CliRunner().invoke(report, [str(tmp_path / "bad")])
    assert res.exit_code == 2 and "not valid JSON" in res.output


def test_report_skips_folders_without_results(tmp_path):
    """`fractaldb report runs/*` with pre-training runs beside the fine-tuning ones."""
    make_run(tmp_path / "runs" / "c10", "cifar10", "scratch", [(50.0, 90.0)])
    (tmp_path / "runs" / "quickstart").mkdir()  # a pre-training run: no results.json
    (tmp_path / "runs" / "quickstart" / "config.yaml").write_text("task: supervised\n")
    runs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    res = CliRunner().invoke(report, runs)
    assert res.exit_code == 0, res.output
    assert f"note: skipped {tmp_path / 'runs' / 'quickstart'}: no results.json" in res.output
    assert "| scratch | cifar10 |" in res.output and "quickstart |" not in res.output
    res = CliRunner().invoke(report, [str(tmp_path / "runs" / "quickstart")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
