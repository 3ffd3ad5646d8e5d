"""The training engine: one loop for supervised pre-training, MAE and fine-tuning.

`train(cfg, task, data, out_dir)` handles distributed setup, global-batch arithmetic, timm's
optimizer and per-step scheduler factories, AMP, clipping, EMA, checkpoint/resume, logging
and export. The task (pretrain/engine/task.py) supplies the model, the batch augmentation on the
device (Task.augment), the loss and the evaluation.

Pieces, in the order they run: `setup_run` (build everything, resume) -> per epoch
`train_epoch` (-> `forward_backward` + `optimizer_step` per step, losses read by `StepWindow`
only at logging steps) -> `end_epoch` (-> `evaluate`) -> `save_run_checkpoint`; finally
`export_final`. The step never synchronises with the host except at logging steps.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fractaldb.core.atomic import write_text_atomically
from fractaldb.core.errors import FractalDBError
from pretrain.engine import distributed as D
from pretrain.engine.checkpoint import keep_copy, load_checkpoint, save_checkpoint
from pretrain.engine.config import config_diff, dump_config, record_fallback
from pretrain.engine.data import epoch_seed
from pretrain.engine.metrics import RunLogger, WindowMeter
from pretrain.engine.models import unwrap
from pretrain.engine.task import DataSource, Task


@dataclass(frozen=True)
class BatchPlan:
    """How the global batch is split: per rank, per micro-batch, and accumulation steps."""

    global_batch: int
    world_size: int
    per_rank: int
    micro_batch: int
    accum_steps: int
    lr: float


def plan_batch(cfg: dict[str, Any], world_size: int) -> BatchPlan:
    """Derive per-rank batch, accumulation and the learning rate from the global batch."""
    gb = int(cfg["batch_size"])
    if gb <= 0 or gb % world_size:
        raise FractalDBError(
            f"global --batch-size {gb} does not split evenly over {world_size} ranks; "
            f"fix: use a multiple of {world_size}"
        )
    per_rank = gb // world_size
    micro = int(cfg["micro_batch"] or per_rank)
    if micro <= 0 or per_rank % micro:
        raise FractalDBError(
            f"per-rank batch {per_rank} is not a multiple of micro_batch {micro}; "
            f"fix: --set micro_batch=N with N dividing {per_rank}"
        )
    if cfg["lr"] is not None:
        lr = float(cfg["lr"])
    else:
        lr = float(cfg["blr"]) * gb / float(cfg["lr_base_size"])
    return BatchPlan(gb, world_size, per_rank, micro, per_rank // micro, lr)


def check_batch_fits(global_batch: int, num_samples: int) -> None:
    """Refuse a global batch larger than an epoch's training samples (no step could be taken)."""
    if num_samples and global_batch > num_samples:
        fits = 1 << (int(num_samples).bit_length() - 1)  # the largest power of two that fits
        raise FractalDBError(
            f"--batch-size {global_batch} is larger than the {num_samples} training samples of "
            f"an epoch; fix: --batch-size {fits} (or less), or more training data"
        )


def warmup_warning(cfg: dict[str, Any]) -> str | None:
    """A one-line warning when the learning-rate warm-up lasts as long as the whole run."""
    warmup, epochs = int(cfg["warmup_epochs"] or 0), int(cfg["epochs"])
    if warmup > 0 and warmup >= epochs:
        # one epoch leaves one shorter warm-up: none ("N < 1" reads as a riddle)
        fix = "warmup_epochs=0" if epochs == 1 else f"warmup_epochs=N with N < {epochs}"
        return (
            f"warning: warmup_epochs {warmup} is not shorter than the run's {epochs} epochs, so "
            f"the lr never leaves its warm-up ramp; fix: --set {fix}"
        )
    return None


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """`auto` means bf16 on GPU and full precision on CPU; returns the autocast dtype or None."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}
    if amp not in table:
        raise FractalDBError(f"unknown amp mode {amp!r}; fix: --amp bf16, fp16 or none")
    return table[amp]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def _num_images(batch: Any) -> int:
    while isinstance(batch, (list, tuple)):
        batch = batch[0]
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    return int(batch.shape[0])


def find_resume(resume: str | None, out_dir: Path) -> Path | None:
    """`auto` -> RUN/last.pt if present, a path -> that file, None -> fresh start (refusing to
    overwrite a run that already has a checkpoint)."""
    last = out_dir / "last.pt"
    if resume is None:
        if last.exists():
            raise FractalDBError(
                f"{out_dir} already holds a checkpoint; fix: --resume auto to continue it, "
                "or choose another --out"
            )
        return None
    if resume == "auto":
        return last if last.exists() else None
    path = Path(resume)
    if not path.is_file():
        raise FractalDBError(f"--resume {resume}: no such checkpoint; fix: a path or 'auto'")
    return path


# torch optimizers with a fused CUDA kernel (timm passes `fused` through to them)
FUSED_OPTIMIZERS = frozenset({"adam", "adamw"})


class NonFiniteLoss(FractalDBError):
    """Raised (on every rank at once) when the averaged loss is NaN or infinite."""


@dataclass
class Run:
    """Everything `setup_run` builds for one training run; the loop's pieces share it."""

    cfg: dict[str, Any]
    task: Task
    data: DataSource
    out_dir: Path
    info: Any
    plan: BatchPlan
    model: nn.Module
    train_model: nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: Any
    logger: RunLogger
    autocast: Any
    steps_per_epoch: int
    epochs: int
    start_epoch: int = 0
    global_step: int = 0
    probe: Any = None
    say: Any = print
    # torch.compile has not yet completed an optimizer step (a failure then falls back to eager)
    compile_pending: bool = False
    # optimizer steps taken by this process (0: still starting up, see startup_oom)
    steps_here: int = 0

    @property
    def device(self) -> torch.device:
        """This rank's device."""
        return self.info.device

    def lr(self) -> float:
        """The current (largest) learning rate over the parameter groups."""
        return max(g["lr"] for g in self.optimizer.param_groups)


def train(
    cfg: dict[str, Any],
    task: Task,
    data: DataSource,
    out_dir: str | Path,
    *,
    resume: str | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run (or continue) training; returns the last epoch's metrics. See module docstring.
    `verbose` prints the whole resolved configuration, not only its summary."""
    try:
        run = setup_run(cfg, task, data, Path(out_dir), resume, verbose)
    except torch.OutOfMemoryError as exc:
        raise startup_oom(cfg, exc) from None
    last_metrics: dict[str, Any] = {}
    try:
        for epoch in range(run.start_epoch, run.epochs):
            last_metrics = train_epoch(run, epoch)
            if run.info.is_main:
                save_run_checkpoint(run, epoch + 1)
            D.barrier()
        export_final(run)
        D.barrier()
    except torch.OutOfMemoryError as exc:
        if run.steps_here:
            raise
        raise startup_oom(cfg, exc, run.plan) from None
    except KeyboardInterrupt:  # Ctrl-C (the console then prints "Aborted.")
        if run.info.is_main:
            tqdm.write(interrupted_hint(run.out_dir), file=sys.stderr)
        raise
    finally:
        run.logger.close()
    return last_metrics


def interrupted_hint(out_dir: Path) -> str:
    """What an interrupted run keeps, and how to continue it."""
    last = out_dir / "last.pt"
    if last.exists():
        return (
            f"interrupted: {last} holds the last finished epoch; re-run the same command with "
            "--resume auto to continue from it"
        )
    return "interrupted before the first epoch ended (no checkpoint yet): re-run the command"


def startup_oom(
    cfg: dict[str, Any], exc: BaseException, plan: BatchPlan | None = None
) -> FractalDBError:
    """The one-line error for running out of device memory before the first optimizer step:
    the batch that did not fit and the flag that lowers it."""
    gb = int(cfg["batch_size"])
    micro = plan.micro_batch if plan is not None else int(cfg["micro_batch"] or gb)
    ranks = plan.world_size if plan is not None else 1
    device = "CUDA" if "CUDA" in str(exc) or str(cfg["device"]).startswith("cuda") else "device"
    where = f"a micro-batch of {micro} images per GPU (global --batch-size {gb}"
    where += f" over {ranks} ranks)" if ranks > 1 else ")"
    if micro > 1:
        fix = (
            f"--micro-batch {micro // 2} (gradient accumulation keeps the global batch and the "
            f"lr), or --batch-size {max(gb // 2, ranks)}"
        )
    else:
        fix = "a smaller --model or --img-size, or a GPU with more memory"
    return FractalDBError(f"{device} out of memory at start-up with {where}; fix: {fix}")


def setup_run(
    cfg: dict[str, Any],
    task: Task,
    data: DataSource,
    out_dir: Path,
    resume: str | None,
    verbose: bool = False,
) -> Run:
    """Distributed setup, batch plan, model, optimizer, schedule, EMA, resume and logging."""
    info = D.init_distributed(cfg["device"])
    device = info.device
    say = (
        (lambda *a: tqdm.write(" ".join(str(x) for x in a), file=sys.stdout))
        if info.is_main
        else (lambda *a: None)
    )
    plan = plan_batch(cfg, info.world_size)
    check_batch_fits(plan.global_batch, data.num_samples)
    warning = warmup_warning(cfg)
    if warning and info.is_main:
        tqdm.write(warning, file=sys.stderr)
    task.setup(cfg, data.num_classes)
    task.bind_data(data)
    task.check_batch(plan.micro_batch)
    amp_dtype = resolve_amp(cfg["amp"], device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    ckpt_path = find_resume(resume, out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()

    # Same initial weights on every rank (DDP also broadcasts them, but EMA copies first).
    seed_everything(int(cfg["seed"]))
    model = task.build_model().to(device)
    optimizer = build_optimizer(cfg, model, plan.lr, device)

    probe = data.train_loader(
        0, batch_size=plan.micro_batch, seed=int(cfg["seed"]), rank=info.rank,
        world_size=info.world_size,
    )  # fmt: skip
    steps_per_epoch = len(probe) // plan.accum_steps
    if steps_per_epoch < 1:
        raise FractalDBError(
            f"an epoch has {len(probe)} micro-batches per rank, fewer than the {plan.accum_steps} "
            "needed for one optimizer step; fix: a smaller --batch-size or more samples per epoch"
        )
    epochs = int(cfg["epochs"])
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = None
    if cfg["ema"]:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=float(cfg["ema_decay"]))

    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    run = Run(
        cfg, task, data, out_dir, info, plan, model, model, optimizer, scheduler, scaler, ema,
        logger=None, autocast=autocast, steps_per_epoch=steps_per_epoch, epochs=epochs,
        probe=probe, say=say,
    )  # fmt: skip
    if ckpt_path is not None:
        restore_checkpoint(run, ckpt_path)
    elif resume == "auto":
        say(f"no checkpoint in {out_dir}; starting from scratch")
    run.train_model = wrap_model(model, cfg, info)
    run.compile_pending = compiled(cfg, info.device)
    run.logger = RunLogger(
        out_dir, info.is_main, resume_step=run.global_step if ckpt_path else None
    )
    log_setup(run, amp_dtype, verbose)
    return run


def build_scheduler(cfg: dict[str, Any], optimizer: Any, steps_per_epoch: int) -> Any:
    """timm's per-step schedule: a linear warm-up to the peak lr, then the decay over the
    remaining steps (MAE's adjust_learning_rate), so the run reaches its peak and ends at min_lr."""
    from timm.scheduler import create_scheduler_v2

    epochs, warmup = int(cfg["epochs"]), int(cfg["warmup_epochs"] or 0)
    # timm's default (and so DeiT's) fits the warm-up inside the cosine, whose value when the
    # ramp ends is then below the peak: 0.9993x for 5 of 300 epochs, but 0.905x for 1 of 5.
    # warmup_prefix starts the cosine where the ramp ends.
    # A warm-up as long as the run keeps one epoch of cosine after it (warmup_warning).
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg["sched"],
        num_epochs=max(epochs - warmup, 1),
        warmup_epochs=warmup,
        warmup_lr=float(cfg["warmup_lr"]),
        warmup_prefix=True,
        min_lr=float(cfg["min_lr"]),
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    return scheduler


def build_optimizer(cfg: dict[str, Any], model: nn.Module, lr: float, device: torch.device):
    """timm's create_optimizer_v2 from the config; the fused CUDA kernel for Adam/AdamW."""
    from timm.optim import create_optimizer_v2

    opt_kwargs: dict[str, Any] = {}
    if cfg["opt_eps"] is not None:
        opt_kwargs["eps"] = float(cfg["opt_eps"])
    if cfg["opt_betas"] is not None:
        opt_kwargs["betas"] = tuple(cfg["opt_betas"])

    def create(**extra: Any):
        return create_optimizer_v2(
            model,
            opt=cfg["opt"],
            lr=lr,
            weight_decay=float(cfg["weight_decay"]),
            momentum=float(cfg["momentum"]),
            layer_decay=cfg["layer_decay"],
            **opt_kwargs,
            **extra,
        )

    if not use_fused(cfg, device):
        return create()
    # one kernel for all parameters instead of a launch per tensor (same arithmetic); where
    # this torch build or GPU lacks it, the plain optimizer does the same arithmetic slower
    try:
        check_fused_kernel(str(cfg["opt"]).lower(), device)
        return create(fused=True)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:  # any failure of the fused kernel falls back
        name = "AdamW" if str(cfg["opt"]).lower() == "adamw" else "Adam"
        record_fallback(
            cfg,
            "fused_optimizer",
            f"fused {name} is not usable on {device} ({_first_line(exc)}), so the plain "
            f"{name} runs (same arithmetic, slower); fix: a torch build with CUDA kernels for "
            "this GPU",
        )
        return create()


def use_fused(cfg: dict[str, Any], device: torch.device) -> bool:
    """The fused kernel for Adam/AdamW on CUDA (torch's default is the foreach one)."""
    return device.type == "cuda" and str(cfg["opt"]).lower() in FUSED_OPTIMIZERS


def check_fused_kernel(opt: str, device: torch.device) -> None:
    """Take one fused step on a one-element parameter: raises where the kernel cannot run."""
    p = torch.zeros(1, device=device, requires_grad=True)
    p.grad = torch.ones_like(p)
    cls = torch.optim.AdamW if opt == "adamw" else torch.optim.Adam
    cls([p], lr=1e-3, fused=True).step()


def _first_line(exc: BaseException) -> str:
    """`Type: first line of the message` (of the root cause too, where torch wraps one, as
    dynamo's BackendCompilerFailed does), at most 200 characters, for a one-line warning."""

    def line(e: BaseException) -> str:
        text = [t for t in str(e).strip().splitlines() if t.strip()]
        return f"{type(e).__name__}: {text[0].strip()}" if text else type(e).__name__

    root = exc
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    msg = line(exc) if root is exc else f"{type(exc).__name__} <- {line(root)}"
    return msg if len(msg) <= 200 else msg[:197] + "..."


def use_compile(cfg: dict[str, Any], device: torch.device) -> bool:
    """`compile` None (the default) means on for CUDA, off on CPU; True/False force it."""
    return device.type == "cuda" if cfg["compile"] is None else bool(cfg["compile"])


def compiled(cfg: dict[str, Any], device: torch.device) -> bool:
    """Whether the model is compiled: asked for (use_compile) and not fallen back to eager."""
    return use_compile(cfg, device) and "compile" not in cfg.get("fallbacks", {})


def wrap_model(model: nn.Module, cfg: dict[str, Any], info: Any) -> nn.Module:
    """DDP over ranks, then torch.compile (see use_compile); the wrapped model trains."""
    wrapped: nn.Module = model
    if info.world_size > 1:
        ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if use_compile(cfg, info.device):
        try:
            wrapped = torch.compile(wrapped)
        except Exception as exc:  # e.g. a Python version this torch's dynamo does not support
            record_fallback(cfg, "compile", compile_fallback_message(_first_line(exc)))
    return wrapped


def compile_fallback_message(reason: str) -> str:
    """The warning (and RUN/config.yaml record) for a torch.compile that could not work."""
    return (
        f"torch.compile failed ({reason}), so the model trains eager (slower); fix: a C "
        "compiler and Triton that work with this torch and GPU, or --no-compile to skip the "
        "attempt"
    )


def restore_checkpoint(run: Run, ckpt_path: Path) -> None:
    """Load weights, optimizer, schedule, scaler, EMA and RNG; refuse other settings or data
    (before anything is loaded, so that the one line names the setting, not a tensor)."""

    def same_run(ckpt: dict[str, Any]) -> None:
        changed = config_diff(ckpt["config"], run.cfg)
        if changed:
            raise FractalDBError(
                f"--resume {ckpt_path}: settings differ from the checkpoint's "
                f"({', '.join(changed)}); fix: resume with the original settings (see "
                "RUN/config.yaml) or a new --out"
            )
        if ckpt["manifest_sha256"] != run.data.manifest_sha256:
            raise FractalDBError(
                f"--resume {ckpt_path}: the data's manifest hash {run.data.manifest_sha256} "
                f"differs from the checkpoint's {ckpt['manifest_sha256']}; fix: use the same "
                "--data (or --data-root), or a new --out"
            )

    ckpt = load_checkpoint(
        ckpt_path,
        model=run.model,
        optimizer=run.optimizer,
        scheduler=run.scheduler,
        scaler=run.scaler,
        ema=run.ema,
        restore_rng=True,
        before_load=same_run,
    )
    run.start_epoch = int(ckpt["data_position"]["epoch"])
    run.global_step = int(ckpt["global_step"])
    run.scheduler.step_update(num_updates=run.global_step)
    run.say(f"resumed from {ckpt_path}: epoch {run.start_epoch}, step {run.global_step}")


def log_setup(run: Run, amp_dtype: torch.dtype | None, verbose: bool = False) -> None:
    """Write RUN/config.yaml, print a summary of the resolved settings (all of them when
    `verbose`) and log the setup entry."""
    cfg, plan, info = run.cfg, run.plan, run.info
    setup = {
        "type": "setup",
        "step": run.global_step,
        "world_size": info.world_size,
        "global_batch": plan.global_batch,
        "per_rank_batch": plan.per_rank,
        "micro_batch": plan.micro_batch,
        "accum_steps": plan.accum_steps,
        "lr": plan.lr,
        "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.steps_per_epoch * run.epochs,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "none",
        "compile": compiled(cfg, run.device),
        "device": str(run.device),
        "num_classes": run.data.num_classes,
        "manifest_sha256": run.data.manifest_sha256,
    }
    if not info.is_main:
        return
    say = run.say
    config_path = run.out_dir / "config.yaml"
    write_text_atomically(config_path, dump_config(cfg))
    if verbose:
        say(f"resolved configuration (also in {config_path}):")
        say(dump_config(cfg).rstrip())
    else:
        # the ~65 keys live in config.yaml; the log keeps what a reader checks first
        data = cfg.get("data") or cfg.get("on_the_fly") or cfg.get("dataset") or "-"
        say(
            f"resolved configuration: task {cfg['task']}, data {data}, {cfg['epochs']} epochs; "
            f"all of it in {config_path} (--verbose prints it)"
        )
    lr_src = (
        "--lr"
        if cfg["lr"] is not None
        else (f"blr {cfg['blr']:g} x {plan.global_batch} / {cfg['lr_base_size']}")
    )
    say(
        f"batch: global {plan.global_batch} = {info.world_size} ranks x {plan.per_rank} "
        f"(micro-batch {plan.micro_batch} x {plan.accum_steps} accumulation steps); "
        f"lr {plan.lr:.6g} ({lr_src}); {run.steps_per_epoch} steps/epoch, "
        f"{run.steps_per_epoch * run.epochs} total; amp {setup['amp']}; device {run.device}; "
        f"compile {setup['compile']}"
    )
    for line in run.task.describe():
        say(line)
    run.logger.write(setup)


class StepWindow:
    """Per-step losses kept on the device between host synchronisations.

    The step itself never waits for the device: losses are stacked here and read (one
    collective, one copy) only at logging steps and at the end of an epoch, where the
    non-finite-loss check happens too.
    """

    def __init__(self) -> None:
        self.window, self.whole = WindowMeter(), WindowMeter()
        self.pending: list[tuple[torch.Tensor, int, float]] = []
        self.keys: list[str] = []
        self.first_step = 0

    def add(self, packed: torch.Tensor, keys: list[str], images: int, data_time: float) -> None:
        """Queue one optimizer step's (loss, extras...) device tensor."""
        self.keys = keys
        self.pending.append((packed, images, data_time))

    def sync(self, run: Run, epoch: int, step: int) -> None:
        """Read the queued values (averaged over ranks) into the meters; stop on a NaN/inf."""
        if not self.pending:
            return
        stacked = torch.stack([p for p, _, _ in self.pending])
        values = D.all_reduce_mean(stacked).tolist()
        first = step - len(self.pending) + 1
        for i, (row, (_, images, data_time)) in enumerate(zip(values, self.pending, strict=True)):
            if not math.isfinite(row[0]):
                raise non_finite(run, row[0], epoch, first + i, step)
            vals = {"loss": row[0], **dict(zip(self.keys, row[1:], strict=True))}
            self.window.update(vals, images, data_time)
            self.whole.update(vals, images, data_time)
        self.pending = []


def non_finite(run: Run, value: float, epoch: int, bad_step: int, checked_at: int) -> NonFiniteLoss:
    """The one-line error for a NaN/inf loss found when the window was read at `checked_at`."""
    last = run.out_dir / "last.pt"
    kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint yet"
    when = (
        "before updating the weights"
        if bad_step == checked_at
        else f"at step {checked_at} (losses are read every log_every steps)"
    )
    return NonFiniteLoss(
        f"non-finite loss ({value}) at epoch {epoch + 1}, step {bad_step}; stopped {when}, "
        f"{kept}; fix: lower --lr/--blr, use --amp bf16 or none, or --set clip_grad=1.0, then "
        "--resume auto"
    )


def epoch_loader(run: Run, epoch: int) -> Any:
    """This epoch's training loader (the probe built during setup serves epoch 0)."""
    if epoch == 0 and run.probe is not None:
        loader, run.probe = run.probe, None
        return loader
    run.probe = None
    return run.data.train_loader(
        epoch, batch_size=run.plan.micro_batch, seed=int(run.cfg["seed"]), rank=run.info.rank,
        world_size=run.info.world_size,
    )  # fmt: skip


def train_epoch(run: Run, epoch: int) -> dict[str, Any]:
    """One epoch of optimizer steps, then validation, task hooks and the epoch's log entry."""
    cfg, main = run.cfg, run.info.is_main
    # Every stream of randomness (augmentation, mixup, drop-path, loader workers) is a function
    # of (seed, epoch, rank), so a resumed epoch replays an uninterrupted one exactly.
    seed_everything(epoch_seed(int(cfg["seed"]), epoch, run.info.rank))
    loader = epoch_loader(run, epoch)
    epoch_start = time.perf_counter()
    run.model.train()
    steps = StepWindow()
    bar = tqdm(
        total=run.steps_per_epoch,
        desc=f"epoch {epoch + 1}/{run.epochs}",
        disable=not main,
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
    )
    it = iter(loader)
    log_every = int(cfg["log_every"])
    for _ in range(run.steps_per_epoch):
        packed, keys, images, data_time = forward_backward(run, it, epoch)
        steps.add(packed, keys, images * run.info.world_size, data_time)
        log_now = (run.global_step + 1) % log_every == 0
        if log_now:  # read the losses before the update, so a NaN never reaches the weights
            steps.sync(run, epoch, run.global_step + 1)
        optimizer_step(run)
        run.compile_pending = False  # the compiled model has run a whole step
        run.steps_here += 1
        lr = run.lr()
        run.global_step += 1
        run.scheduler.step_update(num_updates=run.global_step)
        if run.ema is not None:
            run.ema.update(run.model, step=run.global_step)
        bar.update(1)
        if log_now:
            s = steps.window.summary()
            if main:
                bar.set_postfix_str(
                    f"loss {s['loss']:.4f} lr {lr:.3g} {s['images_per_s']:.0f} img/s "
                    f"data {s['data_time'] * 1e3:.0f} ms",
                    refresh=False,
                )
            run.logger.write(
                {"type": "train", "step": run.global_step, "epoch": epoch, "lr": lr, **s}
            )
            steps.window.reset()
    steps.sync(run, epoch, run.global_step)
    bar.close()
    return end_epoch(run, epoch, steps.whole.summary(), time.perf_counter() - epoch_start)


def forward_backward(run: Run, it: Any, epoch: int) -> tuple[torch.Tensor, list[str], int, float]:
    """The micro-batches of one optimizer step: load, augment on the device, forward, backward.

    Returns the step's (loss, extras...) as one device tensor (never read here), the extras'
    keys, the number of images and the time spent waiting for data. While torch.compile has
    not yet completed a step, a failure of the compiled model falls back to eager
    (`fall_back_to_eager`) and the step's micro-batches are run again.
    """
    plan, device = run.plan, run.device
    data_time = 0.0
    images = 0
    done: list[tuple[torch.Tensor, dict[str, Any]]] = []
    kept: list[Any] = []  # this step's batches, while the compiled model is unproven
    for micro in range(plan.accum_steps):
        t0 = time.perf_counter()
        try:
            raw = next(it)
        except StopIteration:
            raise FractalDBError(
                f"the training loader of epoch {epoch + 1} ended before the "
                f"{run.steps_per_epoch * plan.accum_steps} micro-batches its len() "
                "promised; fix: check the shards (`fractaldb shards verify`)"
            ) from None
        batch = to_device(raw, device)
        data_time += time.perf_counter() - t0
        images += _num_images(batch)
        batch = run.task.augment(batch)
        if not run.compile_pending:
            done.append(micro_step(run, batch, micro))
            continue
        kept.append(batch)
        failure = None
        try:
            done.append(micro_step(run, batch, micro))
        except (torch.OutOfMemoryError, FractalDBError):
            raise
        except Exception as exc:  # whatever torch.compile raised (dynamo, inductor, Triton)
            failure = _first_line(exc)
        if failure is not None:  # outside the except block: its traceback holds activations
            fall_back_to_eager(run, failure)
            done = [micro_step(run, b, m) for m, b in enumerate(kept)]
    loss_sum = torch.zeros((), device=device)
    extras_sum: dict[str, torch.Tensor] = {}
    for loss, extras in done:
        loss_sum += loss.detach().float()
        for k, v in extras.items():
            extras_sum[k] = extras_sum.get(k, 0.0) + torch.as_tensor(v, device=device).float()
    keys = sorted(extras_sum)
    packed = torch.stack([loss_sum] + [extras_sum[k] for k in keys]) / plan.accum_steps
    return packed, keys, images, data_time


def micro_step(run: Run, batch: Any, micro: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Forward and backward of one (augmented) micro-batch; returns its loss and extras."""
    plan = run.plan
    sync = (
        run.train_model.no_sync()
        if isinstance(run.train_model, nn.parallel.DistributedDataParallel)
        and micro < plan.accum_steps - 1
        else contextlib.nullcontext()
    )
    with sync:
        with run.autocast:
            loss, extras = run.task.train_step(run.train_model, batch)
        scaled = loss / plan.accum_steps
        (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
    return loss.detach(), {
        k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in extras.items()
    }


def fall_back_to_eager(run: Run, reason: str) -> None:
    """Train the uncompiled model from now on: drop the compiled wrapper and any gradients
    the failed attempt left, record the fallback in RUN/config.yaml and warn in one line."""
    run.train_model = getattr(run.train_model, "_orig_mod", run.train_model)
    run.compile_pending = False
    run.optimizer.zero_grad(set_to_none=True)
    import torch._dynamo

    torch._dynamo.reset()  # drop the half-built compiled graphs
    record_fallback(run.cfg, "compile", compile_fallback_message(reason))
    if run.info.is_main:
        write_text_atomically(run.out_dir / "config.yaml", dump_config(run.cfg))


def optimizer_step(run: Run) -> None:
    """Clip (if configured), step (through the fp16 scaler if any), zero the gradients."""
    clip = run.cfg["clip_grad"]
    params = run.model.parameters()
    if run.scaler is not None:
        if clip:
            run.scaler.unscale_(run.optimizer)
            nn.utils.clip_grad_norm_(params, float(clip))
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        if clip:
            nn.utils.clip_grad_norm_(params, float(clip))
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


def end_epoch(run: Run, epoch: int, summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Validate when due, run the task's epoch hooks, log and print the epoch's entry."""
    cfg = run.cfg
    entry: dict[str, Any] = {
        "type": "epoch",
        "step": run.global_step,
        "epoch": epoch,
        "lr": run.lr(),
        "epoch_time": seconds,
        **summary,
    }
    if epoch + 1 == run.epochs or (epoch + 1) % int(cfg["eval_every"]) == 0:
        entry.update(evaluate(run))
    entry.update(run.task.on_epoch_end(epoch, run.model, run.out_dir) or {})
    entry.update(_bad_sample_counts(run.data, run.say))
    run.logger.write(entry)
    run.task.on_epoch_logged(epoch, entry, run.out_dir)
    run.say(
        f"epoch {epoch + 1}/{run.epochs}: "
        + " ".join(
            f"{k} {v:.4g}"
            for k, v in entry.items()
            if k not in ("type", "step", "epoch") and isinstance(v, (int, float))
        )
    )
    return entry


def evaluate(run: Run) -> dict[str, float]:
    """The task's validation of the model (and of its EMA copy, keys val_ema_*)."""
    return _validate(run.task, run.data, run.model, run.ema, run.plan, run.info, run.autocast)


def save_run_checkpoint(run: Run, epoch: int) -> None:
    """RUN/last.pt after `epoch` epochs (and a kept copy every save_every epochs)."""
    _save(
        run.out_dir, run.model, run.optimizer, run.scheduler, run.scaler, run.ema, epoch,
        run.global_step, run.cfg, run.data.manifest_sha256,
    )  # fmt: skip


def export_final(run: Run) -> None:
    """Write the final (and EMA) weights through the task's export (rank 0)."""
    bad = getattr(run.data, "bad_samples", None)
    if bad is not None and bad.total:
        run.say(bad.summary())
    held = getattr(run.data, "val_left_out", None)  # counted apart from training's (badsamples)
    if held is not None and held.epoch_count:
        run.say(f"left out {held.epoch_count} unreadable held-out {held.what} of every "
                "evaluation; first: " + "; ".join(held.first()))  # fmt: skip
    if not run.info.is_main:
        return
    path = run.task.export(unwrap(run.model), run.out_dir / "model.safetensors")
    run.say(f"final weights: {path}")
    if run.ema is not None:
        ema_path = run.task.export(run.ema.module, run.out_dir / "model_ema.safetensors")
        run.say(f"EMA weights: {ema_path}")


def _bad_sample_counts(data: DataSource, say) -> dict[str, int]:
    """This epoch's and the run's skipped unreadable samples, for metrics.jsonl (naming the
    first few on the console)."""
    bad = getattr(data, "bad_samples", None)  # shards/badsamples.py; absent for in-memory data
    if bad is None:
        return {}
    if bad.epoch_count:
        say(f"skipped {bad.epoch_count} unreadable sample(s) this epoch; first: "
            + "; ".join(bad.first()))  # fmt: skip
    return {"bad_samples": bad.epoch_count, "bad_samples_total": bad.total}


def _validate(task, data, model, ema, plan, info, autocast) -> dict[str, float]:
    loader = data.val_loader(
        batch_size=plan.micro_batch, rank=info.rank, world_size=info.world_size
    )
    if loader is None:
        return {}
    model.eval()
    with autocast, torch.no_grad():
        out = dict(task.evaluate(model, loader, info.device))
        if ema is not None:
            loader = data.val_loader(
                batch_size=plan.micro_batch, rank=info.rank, world_size=info.world_size
            )
            for k, v in task.evaluate(ema.module, loader, info.device).items():
                out[k.replace("val_", "val_ema_", 1)] = v
    left_out = getattr(data, "val_left_out", None)  # unreadable held-out images, left out
    if left_out is not None:
        out["val_unreadable"] = int(D.reduce_sums({"n": left_out.epoch_count}, info.device)["n"])
    model.train()
    return out


def _save(out_dir, model, optimizer, scheduler, scaler, ema, epoch, global_step, cfg, manifest):
    last = save_checkpoint(
        out_dir / "last.pt",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        ema=ema,
        epoch=epoch,
        global_step=global_step,
        data_position={"epoch": epoch, "batch": 0},
        config=cfg,
        manifest_sha256=manifest,
    )
    every = int(cfg["save_every"] or 0)
    if every and epoch % every == 0:
        # a hard link costs neither space nor time; last.pt's next atomic save gets a new inode
        keep_copy(last, out_dir / f"checkpoint-{epoch:04d}.pt")
