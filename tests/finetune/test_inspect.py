"""The attention / representation math of finetune.attention and `fractaldb inspect`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from finetune import attention as A
from fractaldb.cli import main
from tests.helpers import assert_one_line_error

TINY = {"patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2}


def make_run(folder: Path, model: str, img_size: int = 32, **model_args) -> Path:
    """A run folder like the engine's: config.yaml and model.safetensors of a random model."""
    import timm
    import yaml
    from safetensors.torch import save_file

    args = {**TINY, **model_args}
    torch.manual_seed(0)
    net = timm.create_model(model, img_size=img_size, num_classes=3, **args)
    folder.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, folder / "model.safetensors"
    )
    cfg = {
        "model": model,
        "model_args": args,
        "img_size": img_size,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {
        "vit": make_run(root / "vit", "vit_tiny_patch16_224"),
        # no class token, average pooling, register tokens
        "reg": make_run(root / "reg", "vit_tiny_patch16_224", class_token=False,
                        global_pool="avg", reg_tokens=2),
        # class and distillation tokens, at another resolution
        "deit": make_run(root / "deit", "deit_tiny_distilled_patch16_224", img_size=48),
    }  # fmt: skip


def tiny_attention(run: Path, images: Path) -> tuple[object, list[torch.Tensor]]:
    from finetune.inspection import attention_maps, find_images, load_vit, to_batch

    v = load_vit(str(run))
    x, _ = to_batch(v, find_images(images, 3))
    return v, attention_maps(v, x)


def test_rollout_rows_sum_to_one_on_a_tiny_vit(runs, images):
    v, maps = tiny_attention(runs["deit"], images)
    assert len(maps) == 2 and maps[0].shape == (3, 2, 2 + 36, 2 + 36) and v.prefix == 2
    rollout = A.attention_rollout(maps)
    assert torch.allclose(rollout.sum(-1), torch.ones(3, 38), atol=1e-5)
    heat = A.token_map(rollout, v.prefix, v.grid)
    assert heat.shape == (3, 6, 6) and torch.allclose(heat.sum((1, 2)), torch.ones(3))


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(2, 3, 5, 5)
    assert torch.allclose(A.attention_rollout([eye, eye, eye]), torch.eye(5).expand(2, 5, 5))
    assert torch.allclose(A.attention_rollout([eye], residual=False), torch.eye(5).expand(2, 5, 5))


@pytest.mark.parametrize("prefix", [0, 1, 3])
def test_uniform_attention_gives_a_uniform_map(prefix):
    n = prefix + 16
    uniform = torch.full((1, 2, n, n), 1.0 / n)
    heat = A.token_map(A.attention_rollout([uniform] * 4), prefix, (4, 4))
    assert torch.allclose(heat, torch.full((1, 4, 4), 1 / 16))


def test_attention_distance_of_a_hand_built_pattern():
    # 2x2 grid of 4-px patches; head 0: every patch looks only at patch 0; head 1: at itself
    attn = torch.zeros(1, 2, 5, 5)  # one class token first
    attn[0, 0, :, 1] = 1.0
    attn[0, 1] = torch.eye(5)
    dist = A.mean_attention_distance(attn, (2, 2), patch_size=4, prefix=1)
    assert dist[0].item() == pytest.approx((0 + 4 + 4 + 4 * math.sqrt(2)) / 4)
    assert dist[1].item() == pytest.approx(0.0)
    # attention given to the class token is left out (patch keys renormalised)
    attn[0, 0, :, 0], attn[0, 0, :, 1] = 0.5, 0.5
    assert A.mean_attention_distance(attn, (2, 2), 4, 1)[0].item() == pytest.approx(dist[0].item())


def test_cka_is_one_with_itself_and_invariant_to_rotation_and_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 10, generator=g)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g))
    assert A.linear_cka(x, x) == pytest.approx(1.0)
    assert A.linear_cka(x, x @ q) == pytest.approx(1.0)
    assert A.linear_cka(x, 7.5 * x) == pytest.approx(1.0)
    y = torch.randn(64, 6, generator=g)
    assert A.linear_cka(x @ q, 3 * y) == pytest.approx(A.linear_cka(x, y))
    assert A.linear_cka(x, y) < 0.5  # unrelated features


def test_cka_matrix_and_position_similarity_shapes():
    layers = [torch.randn(2, 4, 8) for _ in range(3)]
    m = A.cka_matrix(layers, layers[:2])
    assert m.shape == (3, 2) and m[0, 0] == pytest.approx(1.0) and m[1, 1] == pytest.approx(1.0)
    other = [torch.randn(2, 9, 8)]  # other token count: one mean token per image
    assert A.cka_matrix(layers, other).shape == (3, 1)
    sim = A.position_similarity(torch.randn(1, 1 + 16, 8), prefix=1)
    assert sim.shape == (16, 16) and torch.allclose(sim.diagonal(), torch.ones(16))


def test_inspect_writes_its_pictures(runs, images, tmp_path):
    out = tmp_path / "pics"
    args = ["inspect", str(runs["vit"]), str(runs["reg"]), str(runs["deit"])]
    result = CliRunner().invoke(main, [*args, "--images", str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("rollout", "heads", "attention_distance", "position_embedding"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("attention_distance", "position_embedding"):  # axes readable at a glance
        with Image.open(out / f"{name}.png") as chart:
            assert chart.width >= 800, (name, chart.size)
    numbers = json.loads((out / "inspect.json").read_text())
    dist = numbers["mean_attention_distance_px"]
    assert set(dist) == {"vit", "reg", "deit"} and np.array(dist["vit"]).shape == (2, 2)
    assert not (out / "cka.png").exists()


def test_inspect_cka_of_two_runs_and_a_weights_file(runs, images, tmp_path):
    out = tmp_path / "cka"
    weights = runs["vit"] / "model.safetensors"
    args = ["inspect", str(runs["vit"]), str(weights), "--model", "vit_tiny_patch16_224"]
    args += [f"--model-arg={k}={v}" for k, v in TINY.items()] + ["--img-size", "32"]
    result = CliRunner().invoke(main, [*args, "--cka", "--images", str(images), "--out", str(out)])
    assert result.exit_code == 0, result.output
    cka = np.array(json.loads((out / "inspect.json").read_text())["cka"])
    # the same weights twice: every layer is identical to itself
    assert cka.shape == (2, 2) and np.allclose(np.diag(cka), 1.0, atol=1e-6)
    assert (out / "cka.png").stat().st_size > 0


def test_inspect_errors_are_one_line(runs, images, tmp_path):
    from safetensors.torch import save_file

    run = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run.invoke(main, ["inspect", str(runs["vit"]), "--images", str(empty), "--out", "o"])
    assert_one_line_error(r, "no images", "fix:")
    cnn = tmp_path / "cnn.safetensors"
    save_file({"w": torch.zeros(1)}, cnn)
    r = run.invoke(main, ["inspect", str(cnn), "--model", "test_resnet", "--images", str(images),
                          "--out", str(tmp_path / "o")])  # fmt: skip
    assert_one_line_error(r, "no ViT attention", "fix:")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    r = run.invoke(main, ["inspect", str(bad), "--model", "vit_tiny_patch16_224",
                          "--images", str(images), "--out", str(tmp_path / "o")])  # fmt: skip
    assert_one_line_error(r, "cannot read", "fix:")
    r = run.invoke(
        main, ["inspect", str(runs["vit"]), "--cka", "--images", str(images), "--out", "o"]
    )
    assert_one_line_error(r, "exactly two")


def test_extracted_attention_equals_softmax_of_the_first_block(runs, images):
    from finetune.inspection import find_images, load_vit, to_batch

    v, maps = tiny_attention(runs["vit"], images)
    x, _ = to_batch(load_vit(str(runs["vit"])), find_images(images, 3))
    model = v.model
    with torch.no_grad():
        tokens = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        attn = model.blocks[0].attn
        b, n, d = tokens.shape
        qkv = attn.qkv(model.blocks[0].norm1(tokens)).reshape(b, n, 3, attn.num_heads, -1)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4)
        expected = (attn.q_norm(q) * attn.scale @ attn.k_norm(k).transpose(-2, -1)).softmax(-1)
    assert torch.allclose(maps[0], expected, atol=1e-5)


def test_zero_byte_image_is_skipped_with_a_warning(runs, images, tmp_path):
    import shutil

    folder = tmp_path / "imgs"
    shutil.copytree(images, folder)
    (folder / "000_empty.jpg").write_bytes(b"")  # sorted first: picked before the others
    out = tmp_path / "pics"
    result = CliRunner().invoke(main, ["inspect", str(runs["vit"]), "--images", str(folder),
                                       "--num-images", "2", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "warning: skipping unreadable image" in result.output and "000_empty.jpg" in result.output
    )
    used = json.loads((out / "inspect.json").read_text())["images"]
    assert len(used) == 2 and not any(u.endswith("000_empty.jpg") for u in used)
