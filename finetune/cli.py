"""`fractaldb finetune` and `fractaldb report` (torch is imported inside the commands only)."""

from __future__ import annotations

import click

from fractaldb.errors import FractalDBError

FINETUNE_EPILOG = """\b
Examples:
  fractaldb finetune --dataset cifar10 --data-root data/ --download \\
      --init runs/deit-fractaldb1k --out runs/c10-fractal
  fractaldb finetune --dataset cifar100 --data-root data/ --model deit_tiny_patch16_224 \\
      --init scratch --out runs/c100-scratch --recipe adamw-cifar
  fractaldb finetune --dataset folder --data-root my_images/ --val-split 0.1 \\
      --init runs/mae --recipe mae-finetune --linear-probe --out runs/probe
  fractaldb finetune --dataset pets --data-root data/ --init weights.safetensors \\
      --model vit_tiny_patch16_224 --model-arg patch_size=8 --img-size 64 --out runs/p --dry-run
\b
--init: a pre-training run folder (RUN/model.safetensors, RUN/config.yaml), a .safetensors or
.pt/.pth file, 'timm' (timm's own weights for --model, needs the hub) or 'scratch'.
Recipes: deit-cifar-sgd (default), adamw-cifar, mae-finetune, or a path to a recipe .yaml.
Splits: flowers102 trains on train+val and tests on test; pets trainval/test; CIFAR train/test.
"""


@click.command(epilog=FINETUNE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", required=True, help="cifar10, cifar100, pets, flowers102 or folder.")
@click.option("--data-root", required=True, type=click.Path(), help="Dataset root folder.")
@click.option(
    "--init", "init", required=True, help="Run folder, weights file, 'timm' or 'scratch'."
)
@click.option("--out", required=True, type=click.Path(), help="Output run folder.")
@click.option("--model", default=None, help="timm model name (default: the pre-training run's).")
@click.option("--download", is_flag=True, help="Let torchvision download the dataset.")
@click.option("--test-root", type=click.Path(), default=None, help="folder: separate test folder.")
@click.option(
    "--val-split", type=float, default=None, help="folder: hold out this fraction per class."
)
@click.option(
    "--recipe", default="deit-cifar-sgd", show_default=True, help="Recipe name or YAML path."
)
@click.option("--linear-probe", is_flag=True, help="Train only the classifier head.")
@click.option("--img-size", type=int, default=None, help="Input size (default: the recipe's).")
@click.option(
    "--model-arg", "model_arg", multiple=True, metavar="KEY=VALUE", help="timm model kwarg."
)
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--batch-size", type=int, default=None, help="Global batch size (default: recipe's).")
@click.option(
    "--lr", type=float, default=None, help="Absolute lr (default: recipe lr x batch/base)."
)
@click.option(
    "--dry-run", is_flag=True, help="Build data, model and weights, print the plan, exit."
)
def finetune(**kw) -> None:
    """Fine-tune (or linear-probe) a pre-trained ViT on a downstream dataset."""
    from .model import parse_model_args
    from .prepare import FinetuneOptions, prepare

    dry_run = kw.pop("dry_run")
    out = kw.pop("out")
    kw["model_args"] = parse_model_args(kw.pop("model_arg"))
    setup = prepare(FinetuneOptions(**kw), echo=click.echo)
    data = setup.data
    click.echo(
        f"finetune: {data.name} ({len(data.train)} train / {len(data.test)} test, "
        f"{data.num_classes} classes), {setup.model_name} at {setup.img_size}px, "
        f"recipe {setup.recipe['name']}, {setup.epochs} epochs, batch {setup.batch_size}, "
        f"lr {setup.lr:.3g}, {len(setup.trainable)} trainable tensors -> {out}"
    )
    if dry_run:
        return
    raise FractalDBError(
        "training needs the shared engine from pretrain/, which is not merged yet; "
        "fix: use --dry-run for now"
    )


REPORT_EPILOG = """\b
Examples:
  fractaldb report runs/c10-fractal runs/c10-scratch
  fractaldb report runs/* --out-md results.md --out-png results.png
"""


@click.command(epilog=REPORT_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out-md", type=click.Path(), default=None, help="Also write the table here.")
@click.option("--out-png", type=click.Path(), default=None, help="Write a bar chart PNG here.")
def report(runs: tuple[str, ...], out_md: str | None, out_png: str | None) -> None:
    """Compare fine-tuning runs: markdown table of top-1/top-5 by init source and dataset."""
    from .report import bar_chart, load_run, markdown_table
    from .results import write_text_atomic

    loaded = [load_run(r) for r in runs]
    table = markdown_table(loaded)
    click.echo(table, nl=False)
    if out_md:
        write_text_atomic(out_md, table)
    if out_png:
        click.echo(f"chart: {bar_chart(loaded, out_png)}")
