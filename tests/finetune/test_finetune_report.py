"""results.json bookkeeping and `fractaldb report` output."""

from __future__ import annotations

import json

from click.testing import CliRunner

from finetune.cli import report
from finetune.report import chart_bars, load_run, load_runs
from finetune.results import new_results, record_epoch, write_results


def make_run(path, dataset, source, accs, **fields):
    fields = {"model": "vit_tiny", "model_args": {"depth": 2}, "img_size": 32,
              "recipe": "deit-cifar-sgd", **fields}  # fmt: skip
    r = new_results(dataset=dataset, init={"source": source}, epochs=len(accs), **fields)
    for e, (t1, t5) in enumerate(accs, start=1):
        record_epoch(r, e, {"top1": t1, "top5": t5, "loss": 1.0})
    write_results(path, r)
    return path


def test_best_and_last_tracking(tmp_path):
    make_run(tmp_path / "a", "cifar10", "scratch", [(10, 50), (30, 70), (20, 90)])
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    # best is picked on the split it reports, and says so
    assert r["best"] == {"epoch": 2, "top1": 30.0, "top5": 70.0, "selected_on": "test",
                         "optimistic": True}  # fmt: skip
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
        "| init | dataset | model | img | recipe | epochs | last top-1 | best top-1* | best top-5*"
    )
    assert lines[2].startswith(
        "| deit-frac1k | cifar10 | vit_tiny | 32 | deit-cifar-sgd | 1/1 | 91.50 | 91.50 | 99.00 |"
    )
    assert lines[3].startswith(
        "| scratch | cifar10 | vit_tiny | 32 | deit-cifar-sgd | 2/2 | 60.00 | 70.25 | 95.00 |"
    )
    assert lines[4].startswith("| weights.safetensors | pets |")
    assert "highest top-1 on the same test split it reports (optimistic)" in md.read_text()
    assert "warning" not in res.output  # like for like
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


def make_probe(path, dataset, init, knn, linear, **fields):
    """probe.json as `fractaldb probe` writes it (finetune.run.run_probe), the fields it reads."""
    path.mkdir(parents=True)
    summary = {"source": init, "kind": "scratch" if init == "scratch" else "run"}
    probe = {"knn_top1": knn, "linear_top1": linear, "train_samples": 40, "test_samples": 10,
             "init": init, "init_summary": summary, "model": "vit_tiny", "model_args": {"depth": 2},
             "img_size": 32, "dataset": dataset, **fields}  # fmt: skip
    (path / "probe.json").write_text(json.dumps(probe))
    return path


def test_report_lists_every_run_in_either_order(tmp_path):
    """Two runs of one init on one dataset both appear, told apart by folder, whatever the order;
    a probe run is listed too."""
    a = make_run(tmp_path / "seed0" / "run", "cifar10", "scratch", [(42.2, 80.0)])
    b = make_run(tmp_path / "seed1" / "run", "cifar10", "scratch", [(11.1, 50.0)])
    p = make_probe(tmp_path / "probe-mae", "cifar10", str(tmp_path / "mae"), 20.5, 35.25)
    outputs, charts = [], []
    for order in ([a, b, p], [p, b, a]):
        png = tmp_path / f"chart{len(outputs)}.png"
        res = CliRunner().invoke(report, [*map(str, order), "--out-png", str(png)])
        assert res.exit_code == 0, res.output
        outputs.append(res.output.replace(str(png), "PNG"))
        charts.append(png.read_bytes())
    assert outputs[0] == outputs[1] and charts[0] == charts[1]
    assert len(load_runs([str(a), str(b), str(a / "results.json"), str(p)])) == 3  # a named twice
    out = outputs[0]
    assert f"| 42.20 | 42.20 | 80.00 | {a} |" in out and f"| 11.10 | 11.10 | 50.00 | {b} |" in out
    assert "| init | dataset | model | img | k-NN top-1 | linear-probe top-1 | run |" in out
    assert f"| mae | cifar10 | vit_tiny | 32 | 20.50 | 35.25 | {p} |" in out


def test_report_chart_has_one_bar_per_run(tmp_path):
    a = make_run(tmp_path / "seed0" / "run", "cifar10", "scratch", [(42.2, 80.0)])
    b = make_run(tmp_path / "seed1" / "run", "cifar10", "scratch", [(50.0, 90.0), (11.1, 50.0)])
    p = make_probe(tmp_path / "probe-mae", "cifar10", str(tmp_path / "mae"), 20.5, 35.25)
    for order in ([a, b, p], [p, b, a]):
        assert chart_bars(load_runs(list(map(str, order)))) == [
            ("cifar10: probe-mae (mae)", "linear probe (frozen)", 35.25),
            ("cifar10: seed0/run (scratch)", "fine-tuned, last epoch", 42.2),
            ("cifar10: seed1/run (scratch)", "fine-tuned, last epoch", 11.1),
        ]


def test_report_warns_when_runs_are_not_like_for_like(tmp_path):
    """The issue's case: a 12-block scratch probe at 224 px beside a 4-block MAE run at 32 px."""
    mae = make_probe(tmp_path / "probe-mae", "folder", "runs/mae", 30.0, 35.6,
                     model_args={"depth": 4}, img_size=32)  # fmt: skip
    scr = make_probe(tmp_path / "probe-scr", "folder", "scratch", 40.0, 48.9, model_args={},
                     img_size=224)  # fmt: skip
    ft = make_run(tmp_path / "ft", "folder", "scratch", [(20.0, 60.0)], model_args={"depth": 4},
                  recipe="finetune-cpu")  # fmt: skip
    md = tmp_path / "t.md"
    res = CliRunner().invoke(report, [str(mae), str(scr), str(ft), "--out-md", str(md)])
    assert res.exit_code == 0, res.output
    warning = [line for line in res.output.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0] in md.read_text(), res.output
    assert (
        "the folder runs differ in model_args {depth: 4} (ft, probe-mae); {} (probe-scr)"
        in (warning[0])
    )
    assert "img_size 32 (ft, probe-mae); 224 (probe-scr)" in warning[0]
    assert "recipe" not in warning[0].split("; fix")[0]  # one fine-tuning run: nothing to differ
    # another recipe and other data are named too
    make_run(tmp_path / "ft2", "folder", "scratch", [(20.0, 60.0)], model_args={"depth": 4},
             recipe="adamw-cifar", dataset_sha256="sha256:other")  # fmt: skip
    res = CliRunner().invoke(report, [str(ft), str(tmp_path / "ft2")])
    assert "differ in recipe finetune-cpu (ft); adamw-cifar (ft2) | data" in res.output


def test_report_reads_schema_1_results(tmp_path):
    """Files written before the split was named once: val_* history keys, best unmarked."""
    old = {"schema": 1, "dataset": "cifar10", "init": {"source": "scratch"}, "epochs": 1,
           "epochs_done": 1, "best": {"epoch": 1, "top1": 50.0, "top5": 90.0},
           "last": {"epoch": 1, "top1": 50.0, "top5": 90.0},
           "history": [{"epoch": 1, "top1": 50.0, "top5": 90.0, "val_samples": 6,
                        "val_unreadable": 1}]}  # fmt: skip
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "results.json").write_text(json.dumps(old))
    r = load_run(tmp_path / "old")
    assert r["history"][0]["test_samples"] == 6 and r["history"][0]["test_unreadable"] == 1
    assert "val_samples" not in r["history"][0] and r["schema"] == 2
    assert r["best"]["selected_on"] == "test" and r["best"]["top1"] == 50.0
    res = CliRunner().invoke(report, [str(tmp_path / "old")])
    assert res.exit_code == 0 and "| 50.00 | 50.00 | 90.00 |" in res.output, res.output
