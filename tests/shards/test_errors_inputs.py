"""Bad input: every listed mistake gives exit code 2 and one line naming the problem and fix."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fractaldb.cli import main
from tests.helpers import assert_one_line_error

TINY = ["pretrain", "supervised", "--recipe", "tiny-cpu", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def two_categories(tmp_path_factory):
    """A small valid categories file (2 sigma-sampler categories)."""
    from fractaldb.search import search_categories

    path = tmp_path_factory.mktemp("cats") / "cats.json"
    search_categories(2, sampler="sigma", seed=2).save(path)
    return path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--epochs", "0"], ["epochs", ">= 1", "--epochs"]),
        (["--lr", "-1"], ["lr", "> 0", "--lr"]),
        (["--batch-size", "0"], ["batch_size", ">= 1", "--batch-size"]),
        (["--img-size", "0"], ["img_size", "--img-size"]),
        (["--max-bad-samples", "-1"], ["max_bad_samples", "--max-bad-samples"]),
        (["--set", "warmup_epochs=-2"], ["warmup_epochs", "--set warmup_epochs="]),
        (["--data", "synthetic:0"], ["synthetic:0", "at least 2", "synthetic:10"]),
        (["--data", "synthetic:x"], ["synthetic:x", "synthetic:10"]),
        (["--model-arg", "patch_size=7"], ["patch size 7", "img_size 32", "patch_size=8"]),
    ],
)
def test_bad_training_numbers(tmp_path, args, needles):
    data = [] if "--data" in args else ["--data", "synthetic:4"]
    res = invoke(*TINY, *data, "--out", str(tmp_path / "run"), *args)
    assert_one_line_error(res, *needles)
    assert not (tmp_path / "run").exists()


def test_batch_size_zero_no_longer_says_multiple_of_one(tmp_path):
    res = invoke(*TINY, "--data", "synthetic:4", "--batch-size", "0", "--out", str(tmp_path / "r"))
    assert "multiple of 1" not in res.output


@pytest.mark.parametrize(
    "sets, needles",
    [
        (["--sampler", "sigma", "--set", "sigma_min=5", "--set", "sigma_max=3"],
         ["sigma_min=5", "sigma_max=3"]),
        (["--set", "n_min=5", "--set", "n_max=3"], ["n_min=5", "n_max=3"]),
        (["--set", "n_max=abc"], ["n_max", "'abc'", "--set n_max="]),
        (["--set", "min_fill=2"], ["min_fill", "--set min_fill="]),
        (["--sampler", "sigma", "--set", "n_choices=abc"], ["n_choices", "[2,3,4]"]),
        (["--set", "n_max"], ["KEY=VALUE", "--set n_max=VALUE"]),
    ],
)  # fmt: skip
def test_bad_search_settings(tmp_path, sets, needles):
    res = invoke("search", "-k", "2", *sets, "--out", str(tmp_path / "c.json"))
    assert_one_line_error(res, *needles)
    assert "depth" not in res.output  # the old hint named a training key
    assert not (tmp_path / "c.json").exists()


def test_preview_negative_instance(tmp_path, two_categories):
    res = invoke("preview", "-c", str(two_categories), "--instances", "-1",
                 "--out", str(tmp_path / "p.png"))  # fmt: skip
    assert_one_line_error(res, "--instances -1", "0,1,2,3")


def test_render_factors_not_a_list(tmp_path, two_categories):
    res = invoke("render", "--categories", str(two_categories), "--out", str(tmp_path / "s"),
                 "--set", "factors=notalist", "--quiet")  # fmt: skip
    assert_one_line_error(res, "factors", "notalist", "--set factors=[")


@pytest.mark.parametrize(
    "maps, probs",
    [
        ([[2.0, 0, 0, 2.0, 0.1, 0], [2.0, 0, 0, 2.0, -0.1, 0.2]], [0.5, 0.5]),  # scale 2
        ([[1e30, 0, 0, 0.5, 0, 0], [0.5, 0, 0, 0.5, 0.5, 0]], [0.5, 0.5]),  # huge coefficient
    ],
)
def test_divergent_categories_are_refused_naming_them(tmp_path, two_categories, maps, probs):
    data = json.loads(two_categories.read_text())
    data["categories"].append({"index": 2, "num_maps": 2, "probs": probs, "maps": maps})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    for args in (
        ["render", "--categories", str(bad), "--out", str(tmp_path / "s"), "--quiet"],
        ["preview", "-c", str(bad), "--out", str(tmp_path / "p.png")],
    ):
        res = invoke(*args)
        assert_one_line_error(res, "bad.json", "diverge", "index 2", "fractaldb search")
    assert not (tmp_path / "s").exists() and not (tmp_path / "p.png").exists()


def test_searched_categories_pass_the_divergence_check():
    from fractaldb.ifs import divergent_categories
    from fractaldb.search import search_categories

    assert divergent_categories(search_categories(24, sampler="sigma", seed=7)) == []
    assert divergent_categories(search_categories(6, sampler="fractaldb", seed=7)) == []


@pytest.mark.parametrize("name", ["random.pt", "random.safetensors", "run"])
def test_init_of_a_corrupt_file_without_model_says_it_is_corrupt(tmp_path, name):
    from tests.fixtures_downstream import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    junk = bytes(range(256)) * 20
    if name == "run":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "model.safetensors").write_bytes(junk)
    else:
        (tmp_path / name).write_bytes(junk)
    res = invoke("finetune", "--dataset", "folder", "--data-root", str(root),
                 "--val-per-class", "1", "--init", str(tmp_path / name),
                 "--out", str(tmp_path / "ft"))  # fmt: skip
    assert_one_line_error(res, "cannot", "fix:")
    assert "no --model" not in res.output


def test_val_data_from_other_categories_is_refused(tmp_path):
    from fractaldb.search import search_categories
    from fractaldb.settings import RenderSettings
    from shards.presets import Layout
    from shards.writer import write_shards

    render = RenderSettings(image_size=16, points=300, mode="point", scheme="none", flips=False)
    layout = Layout(instances_per_category=8, samples_per_shard=16, format="png")
    for name, seed in (("train", 2), ("val", 3)):
        cats = search_categories(2, sampler="sigma", seed=seed)
        write_shards(cats, render, layout, tmp_path / name, workers=1, progress=False)
    res = invoke(*TINY, "--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"),
                 "--out", str(tmp_path / "run"))  # fmt: skip
    assert_one_line_error(res, "--val-data", "other categories", "--categories")


def test_divergence_check_benchmark_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "divergence_check.py"
    out = subprocess.run(
        [sys.executable, str(script), "--num-categories", "4", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["categories"] == 4 and result["flagged"] == 0
    assert result["check_ms_per_category"] > 0


@pytest.mark.parametrize("factors", ["[nan]", "[inf]", "[1e308]", "[0.8, -inf]"])
def test_render_non_finite_or_absurd_factors_are_refused(tmp_path, two_categories, factors):
    res = invoke("render", "--categories", str(two_categories), "--out", str(tmp_path / "s"),
                 "--set", f"factors={factors}", "--quiet")  # fmt: skip
    assert_one_line_error(res, "factors must be finite numbers in (0, 4]", "--set factors=[")
    assert not (tmp_path / "s").exists()


# --- issue 25: misleading one-line errors replaced ------------------------------------------

FT = ["finetune", "--dataset", "folder", "--val-per-class", "1", "--device", "cpu", "--workers",
      "0", "--img-size", "32", "--epochs", "1"]  # fmt: skip
FT_MODEL = ["--model", "vit_tiny_patch16_224", "--model-arg", "patch_size=8", "--model-arg",
            "depth=1", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2"]  # fmt: skip


def test_categories_file_holding_a_list_names_what_it_holds(tmp_path):
    bad = tmp_path / "cats.json"
    bad.write_text("[]")
    res = invoke("render", "--categories", str(bad), "--out", str(tmp_path / "s"), "--quiet")
    assert_one_line_error(res, "cats.json", "JSON list", "fractaldb search")
    assert "AttributeError" not in res.output


def test_data_folder_without_shards_says_so(tmp_path):
    folder = tmp_path / "notshards"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    res = invoke(*TINY, "--data", str(folder), "--out", str(tmp_path / "run"))
    assert_one_line_error(res, f"no shards in {folder}", "fractaldb render")
    assert "finalize" not in res.output


def test_data_given_a_file_names_the_file(tmp_path):
    file = tmp_path / "data.txt"
    file.write_text("hello")
    res = invoke(*TINY, "--data", str(file), "--out", str(tmp_path / "run"))
    assert_one_line_error(res, f"{file} is a file", "fractaldb render")


def test_empty_data_root_is_named_before_the_missing_model(tmp_path):
    (tmp_path / "empty").mkdir()
    res = invoke(*FT, "--data-root", str(tmp_path / "empty"), "--init", "scratch",
                 "--out", str(tmp_path / "ft"))  # fmt: skip
    assert_one_line_error(res, "holds no class folders", "ROOT/CLASS/IMAGE.jpg")


def test_missing_image_folder_root_does_not_suggest_download(tmp_path):
    res = invoke(*FT, *FT_MODEL, "--data-root", str(tmp_path / "nope"), "--init", "scratch",
                 "--out", str(tmp_path / "ft"))  # fmt: skip
    assert_one_line_error(res, "does not exist", "--data-root")
    assert "--download" not in res.output


def test_text_file_as_init_does_not_advise_weights_only_false(tmp_path):
    from tests.fixtures_downstream import make_image_folder

    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=3)
    init = tmp_path / "x.pt"
    init.write_text("weights: 1 2 3\nmore text here\n")
    res = invoke(*FT, *FT_MODEL, "--data-root", str(root), "--init", str(init),
                 "--batch-size", "2", "--set", "warmup_epochs=0", "--out", str(tmp_path / "ft"))  # fmt: skip
    assert_one_line_error(res, "x.pt", "not a plain PyTorch weights file", ".safetensors")
    assert (
        "weights_only` set to `False`" not in res.output and "will likely succeed" not in res.output
    )


def test_unwritable_parent_fix_names_the_folder_that_exists(tmp_path, monkeypatch):
    import errno
    import tempfile

    from fractaldb.core.errors import FractalDBError, check_writable

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir"))

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # root ignores chmod in a test
    with pytest.raises(FractalDBError) as err:
        check_writable(tmp_path / "new" / "run", "run folder")
    message = err.value.format_message()
    assert f"fix: make {tmp_path} writable" in message and "new/run writable" not in message


def test_broken_manifest_fix_is_one_that_works(tmp_path, two_categories):
    out = tmp_path / "s"
    out.mkdir()
    (out / "manifest.json").write_text("{broken")
    res = invoke("render", "--categories", str(two_categories), "--out", str(out), "--quiet")
    assert_one_line_error(res, "manifest.json", f"delete the folder '{out}'")
    assert "regenerate it" not in res.output


def test_preview_to_a_non_image_name_is_refused_in_one_line(tmp_path, two_categories):
    res = invoke("preview", "-c", str(two_categories), "--out", str(tmp_path / "x.txt"))
    assert_one_line_error(res, "x.txt", ".txt is not an image format", "--out preview.png")
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["pretrain", "supervised", "--recipe", "tiny-cpu", "--epochs", "-1"], "epochs must be"),
        (["pretrain", "mae", "--lr", "nan"], "lr must be"),
        (["finetune", "--dataset", "unknown", "--data-root", ".", "--init", "scratch"],
         "unknown dataset"),
        (["finetune", "--dataset", "folder", "--data-root", ".", "--init", "scratch",
          "--epochs", "0"], "epochs must be"),
    ],
)  # fmt: skip
def test_argument_refusals_come_before_torch_is_imported(tmp_path, args, needle):
    """In a fresh interpreter: the refusal is one line and torch was never imported."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom fractaldb.cli import main\n"
        f"res = CliRunner().invoke(main, {[*args, '--out', str(tmp_path / 'run')]!r})\n"
        "print(res.exit_code, 'torch' in sys.modules)\nprint(res.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).parents[2], timeout=120)  # fmt: skip
    first, *rest = done.stdout.splitlines()
    assert first == "2 False", done.stdout + done.stderr
    assert needle in "\n".join(rest)
