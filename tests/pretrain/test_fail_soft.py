"""Fail soft on a GPU (issue 24): each default that cannot work on the machine at hand is
forced to fail on the CPU (monkeypatched), and the run goes on with a one-line warning recorded
in RUN/config.yaml, or stops with one line naming the fix."""

from __future__ import annotations

import functools

import pytest
import torch
import yaml
from click.testing import CliRunner

from fractaldb import gpu
from fractaldb.cli import main
from fractaldb.search import search_categories
from pretrain.engine import loop as engine
from pretrain.supervised import SupervisedTask
from tests.helpers import assert_one_line_error, read_metrics

TINY = ["--recipe", "tiny-cpu", "--device", "cpu", "--epochs", "1", "--samples-per-epoch",
        "32", "--log-every", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def pretrain(*args: str):
    """`fractaldb pretrain supervised` in this process (so monkeypatches apply), on synthetic
    data unless --on-the-fly is given."""
    data = [] if "--on-the-fly" in args else ["--data", "synthetic:4"]
    return CliRunner().invoke(main, ["pretrain", "supervised", *TINY, *data, *args])


def warnings_in(result) -> list[str]:
    shown = [ln.split("\r")[-1].strip() for ln in result.stderr.split("\n")]
    return [ln for ln in shown if ln.startswith("warning: ")]


def assert_error_line(result, *needles: str) -> None:
    """Exit code 2 and one `Error:` line on stderr holding every needle (stdout may hold the
    engine's start-up report); a progress bar's carriage returns are read as a terminal does."""
    assert result.exit_code == 2, result.output
    shown = [ln.split("\r")[-1].strip() for ln in result.stderr.split("\n")]
    lines = [ln for ln in shown if ln]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def losses(run) -> list[float]:
    return [e["loss"] for e in read_metrics(run, "train")]


# ---------------------------------------------------------------------------------------
# torch.compile -> eager


def failing_backend(gm, example_inputs):
    raise RuntimeError("simulated: no working C compiler for inductor\nsecond line")


def backend_failing_on_call(n: int):
    """A backend whose compiled graph raises on its n-th call (a kernel that cannot launch)."""
    calls = {"n": 0}

    def backend(gm, example_inputs):
        def run(*args):
            calls["n"] += 1
            if calls["n"] == n:
                raise RuntimeError("simulated: Triton kernel launch failed")
            return gm.forward(*args)

        return run

    return backend


@pytest.mark.parametrize(
    "backend, extra",
    [
        (failing_backend, []),  # fails to compile at the first micro-batch
        (backend_failing_on_call(2), ["--micro-batch", "8"]),  # fails at the second one
    ],
    ids=["compile-error", "second-micro-batch"],
)
def test_compile_failure_falls_back_to_eager(monkeypatch, tmp_path, backend, extra):
    eager = tmp_path / "eager"
    res = pretrain("--no-compile", *extra, "--out", str(eager))
    assert res.exit_code == 0, res.output
    assert warnings_in(res) == []

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))
    run = tmp_path / "compiled"
    res = pretrain("--compile", *extra, "--out", str(run))
    assert res.exit_code == 0, res.output
    (warning,) = warnings_in(res)
    assert "torch.compile failed (" in warning and "RuntimeError: simulated" in warning
    assert "trains eager" in warning and "--no-compile" in warning and "second line" not in warning
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["fallbacks"]["compile"] == warning.removeprefix("warning: ")
    assert (run / "model.safetensors").is_file()
    # the failed attempt left nothing behind: the step was re-run eagerly from clean gradients
    assert losses(run) == pytest.approx(losses(eager), rel=1e-6)
    # a clean run records no fallback
    assert yaml.safe_load((eager / "config.yaml").read_text())["fallbacks"] == {}


def test_compile_that_raises_at_once_falls_back(monkeypatch, tmp_path):
    def unsupported(model, **kw):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    res = pretrain("--compile", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    (warning,) = warnings_in(res)
    assert "Dynamo is not supported" in warning
    assert read_metrics(tmp_path / "r", "setup")[0]["compile"] is False
    assert "compile" in yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["fallbacks"]


# ---------------------------------------------------------------------------------------
# fused AdamW -> plain AdamW


def test_fused_adamw_failure_falls_back_to_plain(monkeypatch, tmp_path, tiny_config):
    monkeypatch.setattr(engine, "use_fused", lambda cfg, device: True)  # as on CUDA
    model = torch.nn.Linear(4, 2)
    # where the fused kernel works (torch >= 2.4 has it on CPU too), it is used
    cfg = tiny_config()
    opt = engine.build_optimizer(cfg, model, 1e-3, torch.device("cpu"))
    assert opt.param_groups[0]["fused"] is True and cfg["fallbacks"] == {}

    def no_kernel(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device")

    monkeypatch.setattr(torch, "_fused_adamw_", no_kernel)
    cfg = tiny_config()
    opt = engine.build_optimizer(cfg, model, 1e-3, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and not opt.param_groups[0]["fused"]
    assert "fused AdamW is not usable" in cfg["fallbacks"]["fused_optimizer"]
    assert "no kernel image" in cfg["fallbacks"]["fused_optimizer"]

    res = pretrain("--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    (warning,) = warnings_in(res)
    assert warning.startswith("warning: fused AdamW is not usable on cpu (RuntimeError: CUDA")
    assert "plain AdamW runs" in warning
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["fallbacks"] == {"fused_optimizer": warning.removeprefix("warning: ")}
    assert len(losses(tmp_path / "r")) == 2


# ---------------------------------------------------------------------------------------
# CUDA out of memory at start-up -> one line naming the batch and the flag


def oom(*args, **kwargs):
    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79 GiB"
    )


@pytest.mark.parametrize("where", ["train_step", "build_model"])
def test_out_of_memory_at_start_up_is_one_line(monkeypatch, tmp_path, where):
    monkeypatch.setattr(SupervisedTask, where, oom)
    res = pretrain("--batch-size", "16", "--out", str(tmp_path / "r"))
    assert_error_line(
        res, "out of memory at start-up", "micro-batch of 16 images", "--batch-size 16",
        "fix: --micro-batch 8", "--batch-size 8",
    )  # fmt: skip
    assert not (tmp_path / "r").exists()  # nothing left behind


def test_out_of_memory_with_accumulation_names_the_micro_batch(monkeypatch, tmp_path):
    monkeypatch.setattr(SupervisedTask, "train_step", oom)
    res = pretrain("--batch-size", "16", "--micro-batch", "4", "--out", str(tmp_path / "r"))
    assert_error_line(res, "micro-batch of 4 images", "fix: --micro-batch 2")


def test_out_of_memory_after_the_first_step_is_not_a_start_up_error(monkeypatch, tmp_path):
    real = SupervisedTask.train_step
    calls = {"n": 0}

    def later(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            oom()
        return real(self, model, batch)

    monkeypatch.setattr(SupervisedTask, "train_step", later)
    res = pretrain("--out", str(tmp_path / "r"))
    assert isinstance(res.exception, torch.OutOfMemoryError)


# ---------------------------------------------------------------------------------------
# numba-cuda missing -> the install command


@pytest.fixture
def no_numba_cuda(monkeypatch):
    monkeypatch.setattr(gpu, "cuda_available", lambda: False)
    monkeypatch.setattr(gpu, "numba_cuda_installed", lambda: False)


@pytest.fixture(scope="module")
def cats_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cats") / "categories.json"
    search_categories(2, sampler="sigma", seed=0).save(path)
    return path


INSTALL = "pip install 'fractaldb[cuda]'"


def test_render_on_cuda_without_numba_cuda_names_the_install(no_numba_cuda, cats_path, tmp_path):
    res = CliRunner().invoke(main, ["render", "--categories", str(cats_path), "--device",
                                    "cuda", "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert_one_line_error(res, "--device cuda", "numba-cuda, which is not installed", INSTALL)
    assert not (tmp_path / "o").exists()


def test_render_device_cuda_without_numba_cuda_names_the_install(no_numba_cuda, cats_path,
                                                                 tmp_path):  # fmt: skip
    res = pretrain("--on-the-fly", str(cats_path), "--render-device", "cuda",
                   "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(res, "--render-device cuda", "numba-cuda", INSTALL)


def test_on_the_fly_without_numba_cuda_renders_on_the_cpu(no_numba_cuda, cats_path, tmp_path,
                                                          monkeypatch):  # fmt: skip
    from pretrain import sources

    monkeypatch.setattr(sources, "trains_on_cuda", lambda cfg: True)  # as on a GPU
    run = tmp_path / "r"
    res = pretrain("--on-the-fly", str(cats_path), "--image-size", "16", "--points", "200",
                   "--batch-size", "8", "--set", "instances_per_category=4", "--out", str(run))  # fmt: skip
    assert res.exit_code == 0, res.output
    (warning,) = warnings_in(res)
    assert "--on-the-fly renders on the CPU in loader workers" in warning and INSTALL in warning
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["render_device"] == "cpu"
    assert cfg["fallbacks"] == {"render_device": warning.removeprefix("warning: ")}
    assert (run / "model.safetensors").is_file()
