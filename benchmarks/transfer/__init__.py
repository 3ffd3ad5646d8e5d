"""Does fractal pre-training beat training from scratch, and natural photos, on real photos?

Every arm is pre-trained once per budget, then measured on each `--dataset` three ways, with
the same recipe for every arm (only the init differs): fine-tuned end to end (once per
`--ft-seeds` seed; the recipe tuned for scratch on validation, long enough that scratch has
plateaued: OUT/curve-DATASET.png shows it), and on frozen features by a linear probe and a
k-NN vote (`fractaldb probe`; no schedule to tune, no fine-tuning seeds). Every arm is
pre-trained once per `--pt-seeds` seed (default `--seed`) and all its runs are pooled
(n = pre-training x fine-tuning seeds; scratch: fine-tuning seeds only). The arms (`--arms`
names them, or the groups `core`, `variant`, `practice` and `contour`):
  scratch            random init
  fractaldb-sup      supervised on FractalDB-style categories (gray points at 64 px)
  sigma-sup          supervised on sigma-sampler (Anderson & Farrell) categories, hue colour
  sigma-mae          MAE on the same sigma set
  natural-sup        supervised on CIFAR-10 training photos: as many images and steps as the
                     fractal arms, CIFAR-10's validation photos left out (in-domain on cifar10)
  natural-mae        MAE on the same photos
  target-mae         MAE on the downstream set's own training photos (same steps)
  variants of supervised fractal pre-training at about the same image count: many-sup
  (classes / 3 x 3), ofdb-sup (one image per class), 1p-frac-D-sup (one 2-map system, D
  perturbation classes, D 0.05 / 0.1 / 0.2), full-aug-sup and many-full-aug-sup (crops from
  8 %, flips, RandAugment, mixup/cutmix, erasing), on-the-fly-sup (no image seen twice),
  hq-render-sup (rendered at twice the size with patch stamps, downsampled), mae-then-sup and
  sup-then-mae (one pre-training after the other).
  practice: sigma-mae+target-mae and fractaldb-sup+target-mae (the fractal arm, then MAE on
  the downstream training photos from its weights) and target-mae-long (target-mae at twice
  the epochs: the steps of sigma-mae+target-mae, the equal-cost control).
  contour: visualatom-sup and rcdb-sup (supervised on VisualAtom / RCDB contour categories,
  gray, rendered by the family's preset with fractaldb-sup's categories, images, size and
  steps) and visualatom-mae (MAE on the VisualAtom set, sigma-mae's steps); each also
  compared with fractaldb-sup (a second difference with its 95 % CI and p).
`--scale N` multiplies every pre-training's epochs (same images): the compute curve.
`--equal-steps` gives the supervised arms the MAE arms' epochs (the same steps and images).
`--own-recipes` adds each method's own choices beside the shared recipe, chosen on
validation: MAE arms fine-tuned from average-pooled tokens with layer decay 0.65 / 0.75,
supervised arms pre-trained at 0.5 / 2 x the budget's lr.
Datasets: `cifar10` and `flowers12` (the archives in `--data-dir`, ../shared/data by default:
cifar10-train-jpg.tar.gz, flowers12-train-jpg.tar.gz), or any image folder or `.tar.gz` of
one (<class>/<image> below some folder). Each is split per class: the last `--val-per-class`
images (sorted by path) are held out for validation (cifar10 100, flowers12 15, other sets
20 % unless given); cifar10 fine-tunes on the first 100 photos per class of the rest (a
low-data transfer set that converges on a CPU). Pre-training packs of photos (target, natural)
read links to the fine-tune's training photos only, split by the fine-tune's own rule.
Archives are extracted to a temporary folder, never into OUT; flowers12's one duplicate photo
(iris/image_0469, a copy of training photo iris/image_0422) is deleted from validation there.

The model is timm's vit_tiny_patch16_224 with patch 8, pre-trained at 64 px (64 tokens): the
cpu budget uses 4 of its 12 blocks at width 96 (3 heads), the gpu budget the full model, the
smoke budget a 1-block toy.
Fine-tuning runs at each dataset's resolution (cpu: 64 px for both sets, so CIFAR's 32 px
photos are upsampled and a token covers 4x4 photo pixels as with patch 4 at 32 px; gpu:
flowers at 112 px, position embeddings resampled from the 8x8 pre-training grid).

OUT/results-DATASET.md holds a table per dataset: per arm its pre-training steps, images seen
and training FLOPs, mean ± sd over its runs, the difference from scratch with a 95 % CI and
the Welch p-value (the best epoch, optimistic, is left to the JSON); OUT/summary.md adds the
budget, machine, commands and one sentence per arm ("no difference" when the CI holds zero);
OUT/results.png one chart for all, OUT/transfer.json the figures (`--json` prints them).
Every invocation merges its finished runs into `--results-dir`/transfer-BUDGET-DATASET.json
(benchmarks/results by default; a variant's options are added to the name): per arm and run
its figures, cost, the commit, command and wall time. The next invocation (another chunk, or
another checkout without the run folders) skips the runs it holds and tables every arm so
far; a pre-training that a missing run still needs is run again (it is deterministic).

Usage (re-running the same line skips finished steps and resumes interrupted runs; split a
long budget into chunks of at most 45 minutes by --arms and --ft-seeds / --pt-seeds):
    uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --out runs/transfer-cpu
    uv run python -m benchmarks.transfer --budget gpu --dataset cifar10 flowers12 \\
        --ft-seeds 0 1 2 --parallel-arms 4 --out runs/transfer-gpu
    uv run python -m benchmarks.transfer --budget smoke --dataset cifar10 --out /tmp/t-smoke
    uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 \\
        --arms fractaldb-sup sigma-mae natural-sup natural-mae --scale 4 --out runs/cpu-x4
`--parallel-arms N` runs up to N steps that do not depend on each other at once (each its
own process, sharing one GPU; the data-loading workers are split between them), in list
order: renders, pre-trainings, probes, then the fine-tunes (each waits for its arm's
pre-training only; scratch's start at once).
Variants of a budget, each into its own OUT: `--arms` runs only the named arms (and the steps
they need), `--sup-epochs N` pre-trains the supervised arms N epochs instead of the budget's,
`--ft-img-size PX` fine-tunes every set at PX instead of its recipe's resolution:
    uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --arms fractaldb-sup sigma-sup --sup-epochs 15 --out runs/transfer-cpu-sup15
    uv run python -m benchmarks.transfer --budget cpu --dataset flowers12 --ft-seeds 0 1 2 \\
        --arms scratch sigma-mae --ft-img-size 96 --out runs/transfer-cpu-96px

Nothing was tuned on anything but validation. Base: the shipped `adamw-cifar` fine-tuning
recipe (AdamW, wd 0.05, cosine, smoothing 0.1, hflip; cpu flowers12: 40 epochs at lr 2e-3,
cpu cifar10: 60 epochs of 1,000 photos at 5e-4, each chosen by a sweep for scratch, docs/results.md) and the
`deit-tiny-fractaldb` / `mae-vit-tiny-fractal` pre-training recipes, shortened to the budget:
absolute lr (the recipes' batch-scaled values are meant for hundreds of epochs), 1-2 warm-up
epochs, RandomResizedCrop from 35 % (small crops of small images leave a few pixels of
object), no mixup/cutmix (they pay off only over long schedules); cpu: no RandAugment, random
erasing or drop-path either (a few short epochs).
"""

from benchmarks.photos import find_image_folder, is_archive  # noqa: F401
from benchmarks.steps import Step, StepFailed, needed, run_steps, sets  # noqa: F401
from benchmarks.transfer.arms import GROUPS, Arm, FractalSet, arm_names, arms_of, fractal_sets  # noqa: F401
from benchmarks.transfer.budgets import (  # noqa: F401
    BUDGETS,
    FULL_AUG,
    MODEL,
    Budget,
    FineTune,
    engine_args,
    n_images,
    with_variant,
)
from benchmarks.transfer.cli import (  # noqa: F401
    check_variant,
    figure_flags,
    main,
    parse_args,
    resolve_natural,
    variant_flags,
)
from benchmarks.transfer.cost import Cost, forward_flops, pretrain_cost  # noqa: F401
from benchmarks.transfer.downstream import (  # noqa: F401
    ARCHIVES,
    DEFAULT_DATA_DIR,
    BadInput,
    Downstream,
    extract_needed,
    prepare,
    resolve_dataset,
    root_arg,
    train_root_arg,
)
from benchmarks.transfer.plan import (  # noqa: F401
    Plan,
    Unit,
    chosen_arms,
    data_steps,
    finetune_steps,
    ft_run,
    photo_pack_step,
    plan,
    pretrain_args,
    pretrain_steps,
    probe_run,
)
from benchmarks.transfer.report import (  # noqa: F401
    arm_styles,
    chart,
    claims,
    curve_chart,
    machine_line,
    markdown,
    mean_sd,
    summarize,
    summary,
)
from benchmarks.transfer.stats import Difference, claim, welch  # noqa: F401
