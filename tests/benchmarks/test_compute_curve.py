"""benchmarks/compute_curve.py: the same arms at several --scale, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import compute_curve as C


def row(arm: str, last: list[float], linear: float, knn: float) -> dict:
    return {"arm": arm, "saw": "", "last": last, "best": last, "linear": linear, "knn": knn}


def write_run(folder: Path, scale: int, rows: list[dict], budget: str = "cpu") -> Path:
    folder.mkdir(parents=True)
    report = {"budget": budget, "scale": scale, "pre_epochs": 5 * scale,
              "mae_epochs": 10 * scale, "results": {"flowers12": rows}}  # fmt: skip
    (folder / "transfer.json").write_text(json.dumps(report))
    return folder


@pytest.fixture
def two_scales(tmp_path):
    x1 = write_run(tmp_path / "x1", 1, [
        row("scratch", [70.0, 72.0], 36.0, 25.0),
        row("sigma-mae", [72.0, 74.0], 52.0, 36.0),
        row("fractaldb-sup", [69.0, 69.0], 37.0, 14.0),
    ])  # fmt: skip
    x4 = write_run(tmp_path / "x4", 4, [
        row("sigma-mae", [75.0, 77.0, 76.0], 58.0, 41.0),
        row("fractaldb-sup", [70.0, 72.0], 40.0, 20.0),
    ])  # fmt: skip
    return x1, x4


def test_arms_line_up_by_scale_and_scratch_serves_every_scale(two_scales, tmp_path, capsys):
    assert C.main([*map(str, two_scales), "--out", str(tmp_path / "o"), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    figures = json.loads(out[-1])["compute_curve"]["flowers12"]
    assert set(figures["scratch"]) == {"0"}
    assert figures["sigma-mae"]["1"]["mean"] == pytest.approx(73.0)
    assert figures["sigma-mae"]["4"]["mean"] == pytest.approx(76.0)
    assert figures["sigma-mae"]["4"]["sd"] == pytest.approx(1.0)
    assert figures["sigma-mae"]["4"]["pre_epochs"] == 40
    assert figures["fractaldb-sup"]["4"]["pre_epochs"] == 20
    table = (tmp_path / "o" / "compute-curve.md").read_text()
    mae = next(ln for ln in table.splitlines() if ln.startswith("| sigma-mae |"))
    # 1x: 73.00 ± 1.41 over 2 seeds, +2.00 over scratch's 71; 4x: 76.00 ± 1.00 over 3, +5.00
    assert "73.00 ± 1.41 (2) | +2.00 | 52.0 | 36.0" in mae
    assert "76.00 ± 1.00 (3) | +5.00 | 58.0 | 41.0" in mae
    assert (tmp_path / "o" / "compute-curve-flowers12.png").stat().st_size > 1000


def test_an_arm_at_one_scale_only_is_left_out_unless_asked_for(two_scales, tmp_path, capsys):
    x1, x4 = two_scales
    report = json.loads((x1 / "transfer.json").read_text())
    report["results"]["flowers12"].append(row("many-sup", [70.0, 71.0], 37.0, 24.0))
    (x1 / "transfer.json").write_text(json.dumps(report))
    assert C.main([str(x1), str(x4), "--out", str(tmp_path / "o"), "--json"]) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out.splitlines()[-1])["compute_curve"]["flowers12"]
    assert set(figures) == {"scratch", "sigma-mae", "fractaldb-sup"}
    assert captured.err.strip() == "left out (one scale only): many-sup"
    argv = [
        str(x1),
        str(x4),
        "--out",
        str(tmp_path / "p"),
        "--json",
        "--arms",
        "scratch",
        "many-sup",
    ]
    assert C.main(argv) == 0
    figures = json.loads(capsys.readouterr().out.splitlines()[-1])["compute_curve"]["flowers12"]
    assert set(figures) == {"scratch", "many-sup"}
    assert C.main([str(x1), "--out", str(tmp_path / "q"), "--arms", "no-such-arm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--arms no-such-arm not in these runs; fix:" in err[0]


def test_bad_runs_are_one_line_errors(two_scales, tmp_path, capsys):
    x1, _ = two_scales
    other = write_run(tmp_path / "gpu", 4, [row("sigma-mae", [80.0], 60.0, 50.0)], "gpu")
    again = write_run(tmp_path / "again", 1, [row("sigma-mae", [70.0], 50.0, 30.0)])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "transfer.json").write_text("{not json")
    cases = [
        ([tmp_path / "missing"], "is not there"),
        ([tmp_path / "broken"], "not readable JSON"),
        ([x1, other], "different budgets"),
        ([x1, again], "two runs hold sigma-mae at --scale 1"),
    ]
    for runs, needle in cases:
        assert C.main([*map(str, runs), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and needle in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("arm", "epochs"),
    [
        ("sigma-mae", 10),
        ("fractaldb-sup", 5),
        ("sigma-mae+target-mae", 20),  # one pre-training after the other
        ("fractaldb-sup+target-mae", 15),
        ("target-mae-long", 20),  # the equal-cost control of the two-stage arms
        ("visualatom-mae", 10),  # the contour arms: MAE as sigma-mae, supervised as fractaldb-sup
        ("visualatom-sup", 5),
        ("rcdb-sup", 5),
    ],
)
def test_pre_epochs_count_every_stage(arm, epochs):
    assert C._pre_epochs(arm, {"pre_epochs": 5, "mae_epochs": 10}) == epochs


def test_pre_epochs_follow_every_single_stage_arms_kind():
    from benchmarks.transfer import BUDGETS, arms_of

    for arm in arms_of(BUDGETS["cpu"]):
        if arm.kind == "scratch" or arm.init or arm.epochs_x != 1:
            continue
        epochs = 10 if arm.kind == "mae" else 5
        assert C._pre_epochs(arm.name, {"pre_epochs": 5, "mae_epochs": 10}) == epochs, arm.name
