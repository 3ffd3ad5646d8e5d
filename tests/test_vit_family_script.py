"""benchmarks/vit_family.py without training: arms, the summary row of a run folder, errors."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("benchmarks.vit_family")


def test_every_arm_shares_the_recipe_and_only_the_distilled_one_has_a_teacher(bench, tmp_path):
    b = bench.BUDGETS["cpu"]
    pre = {"deit": tmp_path / "deit", "cvt": tmp_path / "cvt"}
    arms = bench.finetune_arms(b, pre, tmp_path / "teacher")
    assert list(arms) == ["cnn-teacher", "cvt-fdb", "cvt-scratch", "deit-fdb", "deit-dist-fdb",
                          "deit-scratch"]  # fmt: skip
    dist = arms["deit-dist-fdb"]
    assert dist[dist.index("--teacher") + 1] == str(tmp_path / "teacher")
    assert dist[dist.index("--distillation") + 1] == "hard"
    assert dist[dist.index("--init") + 1] == str(pre["deit"])  # same pre-training as deit-fdb
    assert sum("--teacher" in a for a in arms.values()) == 1


def test_row_counts_parameters_not_batch_norm_buffers(bench, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_file({"w": torch.zeros(10, 3), "bn.running_mean": torch.zeros(5),
               "bn.num_batches_tracked": torch.zeros((), dtype=torch.long)},
              str(run / "model.safetensors"))  # fmt: skip
    results = {"model": "m", "init": {"kind": "run"}, "best": {"top1": 50.0},
               "last": {"top1": 40.0}, "teacher": {"model": "resnet18"}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    lines = [{"type": "epoch", "images_per_s": 10.0}, {"type": "epoch", "images_per_s": 20.0}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n")
    row = bench.row("deit-dist-fdb", run)
    assert row["params_m"] == pytest.approx(30e-6) and row["train_images_per_s"] == 15.0
    assert "| deit-dist-fdb | m | run | resnet18 | 0.00 | 50.0 | 40.0 | 15 |" in bench.table([row])


def test_missing_tar_is_exit_2(bench, tmp_path, capsys):
    assert bench.main(["--tar", str(tmp_path / "none.tar.gz"), "--out", str(tmp_path)]) == 2
    assert "fix: --tar PATH" in capsys.readouterr().err
