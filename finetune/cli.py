"""`fractaldb finetune` and `fractaldb report` (torch is imported inside the commands only)."""

from __future__ import annotations

import click

from finetune.options import ONLY_WITH, dataset_options, finetune_options
from pretrain.engine.options import engine_options, refuse_ignored, startup_notice

FINETUNE_EPILOG = """\b
Examples:
  fractaldb finetune --dataset cifar10 --data-root data/ --download \\
      --init runs/deit-fractaldb1k --out runs/c10-fractal
  fractaldb finetune --dataset cifar100 --data-root data/ --model deit_tiny_patch16_224 \\
      --init scratch --out runs/c100-scratch --recipe adamw-cifar
  # the CIFAR-10 JPEG folder, last 500 images of each class held out for validation
  fractaldb finetune --dataset folder --data-root cifar10-jpg/train --val-per-class 500 \\
      --init runs/mae/model.safetensors --model vit_tiny_patch16_224 --recipe mae-finetune \\
      --out runs/c10-mae
  fractaldb finetune --dataset pets --data-root data/ --init runs/deit --linear-probe \\
      --epochs 90 --out runs/pets-probe --resume auto
  # DeiT distillation through attention: a CNN teacher fine-tuned on the same data
  fractaldb finetune --dataset cifar10 --data-root data/ --init scratch --model resnet18 \\
      --out runs/c10-resnet18
  fractaldb finetune --dataset cifar10 --data-root data/ --init runs/deit-tiny \\
      --model deit_tiny_distilled_patch16_224 --recipe deit-distill \\
      --teacher runs/c10-resnet18 --out runs/c10-distilled
  # a Hugging Face CvT (needs fractaldb[hf]); RUN/hf loads with from_pretrained
  fractaldb finetune --dataset cifar10 --data-root data/ --init runs/cvt13-fdb --out runs/c10-cvt
  # multi-GPU: --batch-size stays the GLOBAL batch
  torchrun --nproc-per-node 8 --no-python fractaldb finetune --dataset cifar10 ...
\b
--init: a pre-training run folder (RUN/model.safetensors; model, model args, image size and
mean/std come from RUN/config.yaml unless given), a .safetensors or .pt/.pth file, 'timm'
(timm's own weights for --model, needs the hub) or 'scratch'.
Recipes: deit-cifar-sgd (default), adamw-cifar, mae-finetune, deit-distill, finetune-cpu (about
20 s on a 2-core CPU for the quick-start run), or a path to a recipe .yaml.
--teacher/--distillation: DeiT's hard (average of the class head's cross-entropy and the
distillation head's against the teacher's argmax) or soft (KL at tau, weight alpha) loss; the
teacher runs in eval mode on the same augmented batch; evaluation averages the two heads.
Splits: flowers102 trains on train+val and tests on test; pets trainval/test; CIFAR train/test.
Every epoch is evaluated on the test split (top-1, top-5) into RUN/results.json; compare runs
with `fractaldb report RUN [RUN ...]`.
"""


@click.command(epilog=FINETUNE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@dataset_options
@finetune_options
@engine_options
def finetune(**opts) -> None:
    """Fine-tune (or linear-probe) a pre-trained ViT on a downstream dataset.

    Runs on the pre-training engine: the same distributed, AMP, EMA, checkpoint and --resume
    behaviour; --recipe defaults to deit-cifar-sgd.

    \b
    Examples:
      # DeiT's CIFAR recipe from a supervised fractal pre-training run
      fractaldb finetune --dataset cifar10 --data-root data/ --download \\
          --init runs/deit-tiny --out runs/c10-fdb
      # the same from scratch, for comparison; then compare both
      fractaldb finetune --dataset cifar10 --data-root data/ --init scratch \\
          --model deit_tiny_patch16_224 --out runs/c10-scratch
      fractaldb report runs/c10-fdb runs/c10-scratch --out-png c10.png
      # an image folder with a held-out validation part, linear probe of an MAE encoder
      fractaldb finetune --dataset folder --data-root photos/train --val-per-class 50 \\
          --init runs/mae-tiny --recipe mae-finetune --linear-probe --out runs/probe
    """
    from pretrain.engine.options import check_options, startup_notice

    from .datasets import DATASETS, build_datasets

    if opts["dataset"] not in DATASETS:  # one line, before torch is imported
        build_datasets(opts["dataset"], opts["data_root"])
    refuse_ignored(opts, ONLY_WITH)
    check_options(opts)
    startup_notice("finetune", opts)
    from .run import run_finetune

    run_finetune(opts)


REPORT_EPILOG = """\b
Examples:
  fractaldb report runs/c10-fractal runs/c10-scratch
  fractaldb report runs/* --out-md results.md --out-png results.png
\b
Every run given is listed (sorted by dataset, init, run folder: the argument order changes
nothing), fine-tuning runs (RUN/results.json) and probes (RUN/probe.json) in their own tables.
"best" is the epoch chosen on the same test split it reports (optimistic); the chart shows the
last epoch, one bar per run. A warning line says when runs of one dataset differ in model,
model args, image size, recipe or data.
"""


@click.command(epilog=REPORT_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out-md", type=click.Path(), default=None, help="Also write the table here.")
@click.option("--out-png", type=click.Path(), default=None, help="Write a bar chart PNG here.")
def report(runs: tuple[str, ...], out_md: str | None, out_png: str | None) -> None:
    """Compare fine-tuning and probe runs: markdown tables of top-1/top-5, one row per run.

    Folders without results.json or probe.json (pre-training runs in the same runs/ folder)
    are skipped with a note.
    """
    from fractaldb.core.atomic import write_text_atomically
    from fractaldb.core.errors import check_writable, writing_to

    from .report import bar_chart, load_runs, markdown_table

    for path, what in ((out_md, "table"), (out_png, "chart")):
        if path:
            check_writable(path, what)
    loaded = load_runs(list(runs), note=lambda line: click.echo(line, err=True))
    table = markdown_table(loaded)
    click.echo(table, nl=False)
    if out_md:
        with writing_to(out_md, "table"):
            write_text_atomically(out_md, table)
    if out_png:
        with writing_to(out_png, "chart"):
            click.echo(f"chart: {bar_chart(loaded, out_png)}")


PROBE_EPILOG = """\b
Examples:
  # frozen features of a pre-training run on an image folder, last 15 of each class held out
  fractaldb probe --dataset folder --data-root flowers/train --val-per-class 15 \\
      --init runs/mae-tiny --out runs/probe-mae
  # the same for random weights: the floor any pre-training must clear
  fractaldb probe --dataset folder --data-root flowers/train --val-per-class 15 \\
      --init scratch --model vit_tiny_patch16_224 --img-size 64 --out runs/probe-scratch
\b
Nothing is trained but the probe: the backbone runs once over the training and validation
images (evaluation transform), then k-NN (k 20, cosine, temperature 0.07) and a linear probe
(L-BFGS logistic regression on standardised features, L2 1e-4) give their top-1 on the
validation images in OUT/probe.json. Unreadable photos are left out and counted.
"""


@click.command(epilog=PROBE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@dataset_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Writes probe.json.")
@click.option("--recipe", default=None, help="Fine-tuning recipe (its image size, mean/std).")
@click.option("--model", default=None, help="timm model name (default: the --init run's).")
@click.option("--model-arg", multiple=True, help="Extra timm.create_model argument KEY=VALUE.")
@click.option("--img-size", type=click.IntRange(min=8), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--set", "sets", multiple=True, help="Override a configuration key KEY=VALUE.")
@click.option("--print-config", is_flag=True, help="Print the resolved configuration and exit.")
def probe(**opts) -> None:
    """k-NN and linear-probe top-1 of a backbone's frozen features on a downstream dataset."""
    refuse_ignored(opts, ONLY_WITH)
    startup_notice("probe", opts)
    from .run import run_probe

    run_probe(opts)
