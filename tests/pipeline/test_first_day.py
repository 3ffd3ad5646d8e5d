"""What a new user meets on the first day: start-up feedback, help texts, run configs, docs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from fractaldb.cli import main

REPO = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Runs the CLI on a terminal; when the start-up notice is echoed, reports which heavy modules
# are loaded by then and stops (so the test never pays for the torch import).
NOTICE_PROBE = """
import sys, click
echo = click.echo
def probe(message=None, *args, **kwargs):
    echo(message, *args, **kwargs)
    if "loading torch" in str(message):
        loaded = [m for m in ("torch", "torchvision", "timm") if m in sys.modules]
        echo(f"loaded at notice: {loaded}", err=True)
        raise SystemExit(0)
click.echo = probe
from fractaldb.cli import main
main(sys.argv[1:])
"""


def test_start_up_notice_comes_before_torch_is_imported(tmp_path):
    bench = load_benchmark("startup")
    for name, options in (
        ("pretrain supervised", ["--recipe", "tiny-cpu", "--data", "synthetic:2"]),
        ("pretrain mae", ["--recipe", "mae-tiny-cpu", "--data", "synthetic:2"]),
        ("finetune", ["--dataset", "folder", "--data-root", str(tmp_path), "--init", "scratch"]),
    ):
        command = [*name.split(), *options, "--out", str(tmp_path / "r")]
        _, _, printed = bench.timed_terminal_run(
            [sys.executable, "-c", NOTICE_PROBE, *command], b"loaded at notice"
        )
        lines = printed.splitlines()
        assert lines[0].startswith(f"fractaldb {name} -> "), printed
        assert "loading torch and timm" in lines[0], printed
        assert lines[1].strip() == "loaded at notice: []", printed


def test_no_notice_when_output_is_not_a_terminal(tmp_path):
    # CliRunner's streams are not terminals: errors stay one line in logs and pipes
    res = CliRunner().invoke(main, ["pretrain", "supervised", "--recipe", "tiny-cpu", "--data",
        "synthetic:2", "--set", "mixupp=1", "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output


def test_help_examples_write_under_data_not_into_the_package():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    assert "--out shards" not in res.output and "--data shards" not in res.output
    assert "--out data/fdb1k" in res.output
    for sub in (["pretrain", "supervised"], ["pretrain", "mae"]):
        text = CliRunner().invoke(main, [*sub, "--help"]).output
        assert "shards/fdb1k" not in text and "data/fdb1k" in text


def test_mae_val_data_help_does_not_promise_top1():
    text = " ".join(CliRunner().invoke(main, ["pretrain", "mae", "--help"]).output.split())
    held_out = text[text.index("--val-data TEXT") : text.index("--on-the-fly CATEGORIES_JSON")]
    assert "(top-1)" not in held_out and "reconstruction loss (MAE)" in held_out


def test_shards_run_config_has_no_render_preset_on_the_fly_run_has_one(tmp_path):
    def config(*args):
        res = CliRunner().invoke(main, ["pretrain", "supervised", "--recipe", "tiny-cpu",
            *args, "--out", str(tmp_path / "r"), "--print-config"])  # fmt: skip
        assert res.exit_code == 0, res.output
        return yaml.safe_load(res.output)

    assert config("--data", "data/quickstart")["render_preset"] is None
    assert config("--on-the-fly", "cats.json")["render_preset"] == "fractaldb-1k"
    fly = config("--on-the-fly", "cats.json", "--set", "render_preset=sigma-1k")
    assert fly["render_preset"] == "sigma-1k"


def test_recipes_cite_papers_and_code_not_a_file_users_lack():
    from pretrain.engine.config import list_recipes

    for package in ("pretrain", "finetune"):
        for name in list_recipes(package):
            text = (REPO / package / "recipes" / f"{name}.yaml").read_text()
            assert "REFERENCE.md" not in text, name
            recipe = yaml.safe_load(text)
            assert "https://github.com/" in recipe["source"], name


def test_pretrain_batch_larger_than_the_data_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["pretrain", "supervised", "--recipe", "tiny-cpu", "--data",
        "synthetic:2", "--samples-per-epoch", "40", "--batch-size", "64", "--device", "cpu",
        "--out", str(tmp_path / "r")])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [
        "Error: --batch-size 64 is larger than the 40 training samples of an epoch; fix: "
        "--batch-size 32 (or less), or more training data"
    ]


def test_render_prints_where_the_preview_went(tmp_path):
    cats, out = tmp_path / "cats.json", tmp_path / "shards"
    res = CliRunner().invoke(main, ["search", "-k", "2", "--sampler", "sigma", "--out", str(cats)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["render", "--categories", str(cats), "--instances-per-category",
        "2", "--image-size", "32", "--points", "500", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"preview: {out / 'preview.png'}" in res.output.splitlines()
    assert (out / "preview.png").is_file()


def test_readme_quick_start_states_size_and_fine_tunes_with_a_shipped_recipe():
    from pretrain.engine.config import list_recipes

    readme = (REPO / "README.md").read_text()
    start = readme.index("## Quick start")
    quick = readme[start : readme.index("\n## ", start + 1)]
    assert "about 6 GB" in quick and "preview.png" in quick
    assert "fractaldb finetune --dataset folder" in quick and "--init runs/quickstart" in quick
    recipe = quick.split("--recipe ")[-1].split()[0]
    assert recipe in list_recipes("finetune")
    assert "fractaldb report runs/*" in quick
