"""`fractaldb inspect` (the command line; the work is in finetune.inspection, imported only
when the command runs so that `fractaldb --help` never imports torch)."""

from __future__ import annotations

from pathlib import Path

import click

from fractaldb.core.errors import FractalDBError
from pretrain.engine.options import OnlyWith, refuse_ignored

# a run folder names its model in RUN/config.yaml: --model is for bare weights files only
ONLY_WITH = (
    OnlyWith(
        "a .safetensors weights file among the RUNs",
        lambda o: any(not Path(r).is_dir() for r in o["runs"]),
        {"model_name": "--model"},
        fix="drop it (a run folder's model comes from its config.yaml; --model-arg and "
        "--img-size still apply)",
    ),
)

INSPECT_EPILOG = """\b
Examples:
  # scratch vs supervised fractal vs MAE, side by side, on a few flower photos
  fractaldb inspect runs/ft-scratch runs/ft-fractal runs/ft-mae --images flowers/ --out pics/
  # how similar are the layers of two runs (linear CKA)?
  fractaldb inspect runs/pre-sup runs/pre-mae --images flowers/ --cka --out pics/
  # a weights file: name its timm model (and any architecture arguments)
  fractaldb inspect deit.safetensors --model deit_tiny_patch16_224 --images photos/ --out pics/
\b
Writes OUT/rollout.png, heads.png, attention_distance.png, position_embedding.png (and
cka.png with --cka) and OUT/inspect.json with the numbers.
"""


@click.command(epilog=INSPECT_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True)
@click.option("--images", required=True, help="Folder of images to look through the models.")
@click.option("--out", required=True, help="Folder for the pictures.")
@click.option("--num-images", type=int, default=4, show_default=True, help="Images to use.")
@click.option("--cka", is_flag=True, help="Linear-CKA heatmap between the layers of two runs.")
@click.option("--model", "model_name", default=None, help="timm model name for weights files.")
@click.option("--model-arg", "model_arg", multiple=True, help="KEY=VALUE for the model.")
@click.option("--img-size", type=int, default=None, help="Input size (default: the run's).")
def inspect(runs, images, out, num_images, cka, model_name, model_arg, img_size) -> None:
    """Pictures of what ViT runs learned: attention rollout, per-head attention, mean attention
    distance, position-embedding similarity and (--cka) layer similarity, runs in columns.

    RUN is a pre-training or fine-tuning run folder (model.safetensors + config.yaml) or a
    .safetensors file with --model.
    """
    from fractaldb.core.options import parse_key_values

    from .inspection import PICTURE_IMAGES, inspect_runs

    if num_images < 1:
        raise FractalDBError(f"--num-images {num_images}; fix: 1 or more")
    refuse_ignored({"runs": runs, "model_name": model_name}, ONLY_WITH)
    args = parse_key_values(model_arg, "--model-arg")
    result = inspect_runs(
        list(runs), images, out, num_images=num_images, cka=cka, model_name=model_name,
        model_args=args, img_size=img_size,
    )  # fmt: skip
    for name, path in result["figures"].items():
        click.echo(f"{name}: {path}")
    used = len(result["images"])
    if used < num_images:
        click.echo(f"note: --num-images {num_images}, but {images} holds {used} readable "
                   f"image(s): used {used}", err=True)  # fmt: skip
    if used > PICTURE_IMAGES:
        click.echo(f"note: rollout.png and heads.png show the first {PICTURE_IMAGES} of the "
                   f"{used} images; inspect.json and the other pictures use all of them",
                   err=True)  # fmt: skip
