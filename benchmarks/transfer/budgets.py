"""Budgets: the pre-training sizes of every arm and each dataset's shared fine-tuning recipe."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

MODEL = "vit_tiny_patch16_224"


@dataclass(frozen=True)
class FineTune:
    """One dataset's fine-tuning recipe inside a budget, shared by every arm."""

    img_size: int
    epochs: int
    batch: int
    lr: float
    warmup: int
    sets: tuple[str, ...]
    samples_per_epoch: int | None = None
    val_per_class: int | None = None  # None: hold out 20 % of each class
    recipe: str = "adamw-cifar"
    train_per_class: int | None = None  # train on the first N of each class (None: all)


@dataclass(frozen=True)
class Budget:
    """Sizes of one budget: the pre-training of every arm and a recipe per dataset."""

    categories: int
    instances: int
    render_size: int
    points: int
    img_size: int  # pre-training resolution
    model_args: tuple[str, ...]
    samplers: tuple[str, ...]  # one rendered set and one supervised arm per sampler
    mae_sampler: str  # the set MAE pre-trains on
    device: str
    amp: str
    workers: int
    pre_epochs: int
    pre_batch: int
    pre_lr: float
    pre_warmup: int
    pre_sets: tuple[str, ...]
    mae_epochs: int
    mae_lr: float
    mae_decoder: tuple[int, int, int]  # dim, depth, heads
    finetune: dict[str, FineTune]  # "cifar10", "flowers12", and "folder" for any other set
    search_sets: tuple[str, ...] = field(default=())
    pre_samples_per_epoch: int | None = None


_LIGHT_AUG = ("auto_augment=null", "reprob=0", "mixup=0", "cutmix=0", "scale=[0.35,1.0]")
_GPU_AUG = ("mixup=0", "cutmix=0", "scale=[0.35,1.0]", "auto_augment=rand-m9-mstd0.5-inc1")
# The full augmentation stack of OFDB / 1p-frac pre-training (REFERENCE.md section 9), for the
# variant arms that test it: crops from 8 %, flips, RandAugment, mixup/cutmix, erasing
FULL_AUG = (
    "scale=[0.08,1.0]", "hflip=0.5", "auto_augment=rand-m9-mstd0.5-inc1", "mixup=0.8",
    "cutmix=1.0", "smoothing=0.1", "reprob=0.25",
)  # fmt: skip


_SMOKE_FT = FineTune(32, 1, 16, 5e-4, 0, (*_LIGHT_AUG, "drop_path=0", "color_jitter=0"), 64)
# cifar10 at the smoke budget trains on a low-data part, as the cpu budget does
_SMOKE_CIFAR = FineTune(32, 1, 16, 5e-4, 0, _SMOKE_FT.sets, 64, train_per_class=2)
# flowers: 540 training photos; batch 32 gives 17 steps an epoch. Tuned for scratch on
# validation (60-epoch sweep, docs/results.md): AdamW lr 5e-4 / 1e-3 / 2e-3 reached 70.6 / 71.7 /
# 76.1, SGD 1e-2 65.0, RandAugment (+ mixup/cutmix) lower; scratch's curve is flat from about
# epoch 40 of 60, so 40 epochs at 2e-3
_CPU_FLOWERS = FineTune(
    64, 40, 32, 2e-3, 3, (*_LIGHT_AUG, "drop_path=0", "train_eval_samples=180"), None, 15
)
_GPU_FLOWERS = FineTune(112, 40, 64, 5e-4, 3, (*_GPU_AUG, "reprob=0.25"), None, 15)
# cifar10, low-data: 1,000 training photos (the first 100 per class; the full 45,000 do not
# converge in CPU minutes) and 1,000 validation photos (the last 100 per class). Tuned for
# scratch on validation (60-epoch sweep, docs/results.md): AdamW lr 2.5e-4 / 5e-4 / 1e-3 /
# 2e-3 / 4e-3 reached 37.5 / 40.7 / 37.6 / 34.4 / 26.4 (last epoch); lr 5e-4 is
# flat from about epoch 45 of 60 (40.7 at 45, 40.7 at 60). 60 epochs: a 40-epoch cosine run
# of the same recipe left scratch at 37.3 (3 seeds), 3.4 points short of what it reaches
_CPU_CIFAR = FineTune(
    64, 60, 32, 5e-4, 3, (*_LIGHT_AUG, "drop_path=0", "train_eval_samples=200"), None, 100,
    train_per_class=100,
)  # fmt: skip

BUDGETS: dict[str, Budget] = {
    # seconds: a 1-block toy on a few hundred images, to test the pipeline end to end
    "smoke": Budget(
        categories=4,
        instances=16,
        render_size=32,
        points=1000,
        img_size=32,
        model_args=("patch_size=8", "depth=1", "embed_dim=32", "num_heads=2"),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cpu",
        amp="none",
        workers=0,
        pre_epochs=1,
        pre_batch=16,
        pre_lr=1e-3,
        pre_warmup=0,
        pre_sets=(*_LIGHT_AUG, "drop_path=0", "color_jitter=0"),
        mae_epochs=1,
        mae_lr=1e-3,
        mae_decoder=(32, 1, 2),
        finetune={
            "cifar10": _SMOKE_CIFAR,
            # a larger fine-tuning resolution: the position embeddings are resampled
            "flowers12": FineTune(48, 1, 8, 5e-4, 0, _SMOKE_FT.sets, 16, 1),
            "folder": _SMOKE_FT,
        },
        search_sets=("min_fill=0.1",),
        pre_samples_per_epoch=64,
    ),
    # 2 CPU cores, sized for flowers12 with 3 fine-tuning seeds: 32 categories x 100 images
    # per sampler (a 100-category set stayed at chance loss for the first epochs on the former
    # cifar budget), a narrow 4-block ViT (width 96, 3 heads) at 64 px / patch 8 pre-trained
    # for 5 epochs (MAE 10), then the converged recipes above (flowers 40 epochs, about 2.5
    # CPU-minutes a fine-tune; cifar10 60 epochs, about 8)
    "cpu": Budget(
        categories=32,
        instances=100,
        render_size=64,
        points=4000,
        img_size=64,
        model_args=("patch_size=8", "depth=4", "embed_dim=96", "num_heads=3"),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cpu",
        amp="none",
        workers=1,
        pre_epochs=5,
        pre_batch=64,
        pre_lr=1e-3,
        pre_warmup=1,
        pre_sets=(*_LIGHT_AUG, "drop_path=0"),
        mae_epochs=10,
        mae_lr=1.5e-3,
        mae_decoder=(64, 2, 2),
        finetune={
            "cifar10": _CPU_CIFAR,
            "flowers12": _CPU_FLOWERS,
            "folder": _CPU_FLOWERS,
        },
    ),
    # aimed at one 10-minute call on one H100/H200 with --parallel-arms 4 (not yet measured):
    # 1,000 categories x 50 images per sampler, the full 12-block ViT-Tiny
    "gpu": Budget(
        categories=1000,
        instances=50,
        render_size=64,
        points=4000,
        img_size=64,
        model_args=("patch_size=8",),
        samplers=("fractaldb", "sigma"),
        mae_sampler="sigma",
        device="cuda",
        amp="bf16",
        workers=12,
        pre_epochs=10,
        pre_batch=512,
        pre_lr=1e-3,
        pre_warmup=1,
        pre_sets=("mixup=0", "cutmix=0", "scale=[0.35,1.0]"),
        mae_epochs=20,
        mae_lr=1.5e-3,
        mae_decoder=(192, 4, 6),
        finetune={
            # the cpu budget's protocol (not tuned on a GPU yet) on 5x the photos
            "cifar10": replace(_CPU_CIFAR, batch=64, train_per_class=500),
            "flowers12": _GPU_FLOWERS,
            "folder": _GPU_FLOWERS,
        },
    ),
}


def engine_args(b: Budget, img_size: int, seed: int, workers: int) -> list[str]:
    """Options shared by every pre-training and fine-tuning command."""
    out = ["--model", MODEL, "--img-size", str(img_size)]
    for a in b.model_args:
        out += ["--model-arg", a]
    out += ["--device", b.device, "--amp", b.amp, "--workers", str(workers)]
    return out + ["--seed", str(seed), "--resume", "auto"]


def with_variant(
    b: Budget,
    sup_epochs: int | None,
    ft_img_size: int | None,
    scale: int = 1,
    equal_steps: bool = False,
) -> Budget:
    """The budget with the supervised pre-training epochs and/or every set's fine-tuning
    resolution replaced (None keeps the budget's); `scale` multiplies every pre-training's
    epochs (the compute curve: same images, N times the steps); `equal_steps` gives the
    supervised arms the MAE arms' epochs (same images per epoch and batch: the same steps)."""
    if scale != 1:
        b = replace(b, pre_epochs=b.pre_epochs * scale, mae_epochs=b.mae_epochs * scale)
    if equal_steps:
        b = replace(b, pre_epochs=b.mae_epochs)
    if sup_epochs is not None:
        b = replace(b, pre_epochs=sup_epochs)
    if ft_img_size is not None:
        recipes = {k: replace(r, img_size=ft_img_size) for k, r in b.finetune.items()}
        b = replace(b, finetune=recipes)
    return b


def n_images(b: Budget) -> int:
    """Images of every pre-training set (natural and target controls see as many per epoch)."""
    return b.categories * b.instances


# --own-recipes: each method's own fine-tuning choices beside the shared recipe, chosen on
# validation. MAE fine-tunes from average-pooled tokens with layer-wise lr decay (MAE's
# main_finetune: 0.65, 0.75 for the larger models); supervised arms sweep their pre-training
# lr (x 0.5, 1, 2 of the budget's) under the shared fine-tuning recipe
LAYER_DECAYS = (0.65, 0.75)
PRE_LR_FACTORS = (0.5, 2.0)  # besides x 1, the shared column's own run
