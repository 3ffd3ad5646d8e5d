"""The training engine: one loop for supervised pre-training, MAE and fine-tuning.

`train(cfg, task, data, out_dir)` handles distributed setup, global-batch arithmetic, timm's
optimizer and per-step scheduler factories, AMP, clipping, EMA, checkpoint/resume, logging
and export. The task (pretrain/task.py) supplies the model, the loss and the evaluation.
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

from fractaldb.errors import FractalDBError
from pretrain import distributed as D
from pretrain.checkpoint import keep_copy, load_checkpoint, save_checkpoint
from pretrain.config import config_diff, dump_config
from pretrain.data import epoch_seed
from pretrain.metrics import RunLogger, WindowMeter
from pretrain.models import unwrap
from pretrain.task import DataSource, Task


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


class NonFiniteLoss(FractalDBError):
    """Raised (on every rank at once) when the averaged loss is NaN or infinite."""


def train(
    cfg: dict[str, Any],
    task: Task,
    data: DataSource,
    out_dir: str | Path,
    *,
    resume: str | None = None,
) -> dict[str, Any]:
    """Run (or continue) training; returns the last epoch's metrics. See module docstring."""
    out_dir = Path(out_dir)
    info = D.init_distributed(cfg["device"])
    device = info.device
    main = info.is_main
    say = (
        (lambda *a: tqdm.write(" ".join(str(x) for x in a), file=sys.stdout))
        if main
        else (lambda *a: None)
    )

    plan = plan_batch(cfg, info.world_size)
    task.setup(cfg, data.num_classes)
    task.bind_data(data)
    task.check_batch(plan.micro_batch)
    amp_dtype = resolve_amp(cfg["amp"], device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    ckpt_path = find_resume(resume, out_dir)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    D.barrier()

    # Same initial weights on every rank (DDP also broadcasts them, but EMA copies first).
    seed_everything(int(cfg["seed"]))
    model = task.build_model().to(device)

    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    opt_kwargs: dict[str, Any] = {}
    if cfg["opt_eps"] is not None:
        opt_kwargs["eps"] = float(cfg["opt_eps"])
    if cfg["opt_betas"] is not None:
        opt_kwargs["betas"] = tuple(cfg["opt_betas"])
    optimizer = create_optimizer_v2(
        model,
        opt=cfg["opt"],
        lr=plan.lr,
        weight_decay=float(cfg["weight_decay"]),
        momentum=float(cfg["momentum"]),
        layer_decay=cfg["layer_decay"],
        **opt_kwargs,
    )

    start_epoch = 0
    probe = data.train_loader(
        start_epoch,
        batch_size=plan.micro_batch,
        seed=int(cfg["seed"]),
        rank=info.rank,
        world_size=info.world_size,
    )
    steps_per_epoch = len(probe) // plan.accum_steps
    if steps_per_epoch < 1:
        raise FractalDBError(
            f"an epoch has {len(probe)} micro-batches per rank, fewer than the {plan.accum_steps} "
            "needed for one optimizer step; fix: a smaller --batch-size or more samples per epoch"
        )
    epochs = int(cfg["epochs"])
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg["sched"],
        num_epochs=epochs,
        warmup_epochs=int(cfg["warmup_epochs"]),
        warmup_lr=float(cfg["warmup_lr"]),
        min_lr=float(cfg["min_lr"]),
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    ema = None
    if cfg["ema"]:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=float(cfg["ema_decay"]))

    global_step = 0
    if ckpt_path is not None:
        ckpt = load_checkpoint(
            ckpt_path,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            ema=ema,
            restore_rng=True,
        )
        changed = config_diff(ckpt["config"], cfg)
        if changed:
            raise FractalDBError(
                f"--resume {ckpt_path}: settings differ from the checkpoint's ({', '.join(changed)})"
                "; fix: resume with the original settings (see RUN/config.yaml) or a new --out"
            )
        if ckpt["manifest_sha256"] != data.manifest_sha256:
            raise FractalDBError(
                f"--resume {ckpt_path}: the data's manifest hash {data.manifest_sha256} differs "
                f"from the checkpoint's {ckpt['manifest_sha256']}; fix: use the same --data"
            )
        start_epoch = int(ckpt["data_position"]["epoch"])
        global_step = int(ckpt["global_step"])
        scheduler.step_update(num_updates=global_step)
        say(f"resumed from {ckpt_path}: epoch {start_epoch}, step {global_step}")
    elif resume == "auto":
        say(f"no checkpoint in {out_dir}; starting from scratch")

    train_model: nn.Module = model
    if info.world_size > 1:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg["compile"]:
        train_model = torch.compile(train_model)

    logger = RunLogger(out_dir, main, resume_step=global_step if ckpt_path else None)
    setup = {
        "type": "setup",
        "step": global_step,
        "world_size": info.world_size,
        "global_batch": plan.global_batch,
        "per_rank_batch": plan.per_rank,
        "micro_batch": plan.micro_batch,
        "accum_steps": plan.accum_steps,
        "lr": plan.lr,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * epochs,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "none",
        "device": str(device),
        "num_classes": data.num_classes,
        "manifest_sha256": data.manifest_sha256,
    }
    if main:
        (out_dir / "config.yaml").write_text(dump_config(cfg))
        say("resolved configuration (also in " + str(out_dir / "config.yaml") + "):")
        say(dump_config(cfg).rstrip())
        lr_src = (
            "--lr"
            if cfg["lr"] is not None
            else (f"blr {cfg['blr']:g} x {plan.global_batch} / {cfg['lr_base_size']}")
        )
        say(
            f"batch: global {plan.global_batch} = {info.world_size} ranks x {plan.per_rank} "
            f"(micro-batch {plan.micro_batch} x {plan.accum_steps} accumulation steps); "
            f"lr {plan.lr:.6g} ({lr_src}); {steps_per_epoch} steps/epoch, "
            f"{steps_per_epoch * epochs} total; amp {setup['amp']}; device {device}"
        )
        for line in task.describe():
            say(line)
        logger.write(setup)

    autocast = (
        torch.autocast(device_type=device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    last_metrics: dict[str, Any] = {}
    try:
        for epoch in range(start_epoch, epochs):
            # Every stream of randomness (mixup, drop-path, loader workers) is a function of
            # (seed, epoch, rank), so a resumed epoch replays an uninterrupted one exactly.
            seed_everything(epoch_seed(int(cfg["seed"]), epoch, info.rank))
            loader = (
                probe
                if epoch == 0 and start_epoch == 0
                else data.train_loader(
                    epoch,
                    batch_size=plan.micro_batch,
                    seed=int(cfg["seed"]),
                    rank=info.rank,
                    world_size=info.world_size,
                )
            )
            probe = None
            epoch_start = time.perf_counter()
            model.train()
            window, whole = WindowMeter(), WindowMeter()
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{epochs}",
                disable=not main,
                dynamic_ncols=True,
                leave=False,
                file=sys.stderr,
            )
            it = iter(loader)
            for _ in range(steps_per_epoch):
                data_time = 0.0
                loss_sum = torch.zeros((), device=device)
                extras_sum: dict[str, torch.Tensor] = {}
                images = 0
                for micro in range(plan.accum_steps):
                    t0 = time.perf_counter()
                    try:
                        batch = to_device(next(it), device)
                    except StopIteration:
                        raise FractalDBError(
                            f"the training loader of epoch {epoch + 1} ended before the "
                            f"{steps_per_epoch * plan.accum_steps} micro-batches its len() "
                            "promised; fix: check the shards (`fractaldb shards verify`)"
                        ) from None
                    data_time += time.perf_counter() - t0
                    images += _num_images(batch)
                    sync = (
                        train_model.no_sync()
                        if isinstance(train_model, nn.parallel.DistributedDataParallel)
                        and micro < plan.accum_steps - 1
                        else contextlib.nullcontext()
                    )
                    with sync:
                        with autocast:
                            loss, extras = task.train_step(train_model, batch)
                        scaled = loss / plan.accum_steps
                        (scaler.scale(scaled) if scaler is not None else scaled).backward()
                    loss_sum += loss.detach().float()
                    for k, v in extras.items():
                        extras_sum[k] = extras_sum.get(k, 0.0) + torch.as_tensor(v).float()
                # One collective per step carries the loss and extras; its value also decides,
                # identically on every rank, whether to stop.
                keys = sorted(extras_sum)
                packed = (
                    torch.stack([loss_sum] + [extras_sum[k].to(device) for k in keys])
                    / plan.accum_steps
                )
                vals = D.all_reduce_mean(packed).tolist()
                loss_value = vals[0]
                if not math.isfinite(loss_value):
                    last = out_dir / "last.pt"
                    kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint yet"
                    raise NonFiniteLoss(
                        f"non-finite loss ({loss_value}) at epoch {epoch + 1}, step "
                        f"{global_step + 1}; stopped before updating the weights, {kept}; fix: "
                        "lower --lr/--blr, use --amp bf16 or none, or --set clip_grad=1.0, then "
                        "--resume auto"
                    )
                if scaler is not None:
                    if cfg["clip_grad"]:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(model.parameters(), float(cfg["clip_grad"]))
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    if cfg["clip_grad"]:
                        nn.utils.clip_grad_norm_(model.parameters(), float(cfg["clip_grad"]))
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                lr = max(g["lr"] for g in optimizer.param_groups)
                global_step += 1
                scheduler.step_update(num_updates=global_step)
                if ema is not None:
                    ema.update(model, step=global_step)

                step_vals = {"loss": loss_value, **dict(zip(keys, vals[1:], strict=True))}
                n_img = images * info.world_size
                window.update(step_vals, n_img, data_time)
                whole.update(step_vals, n_img, data_time)
                if main:
                    s = window.summary()
                    bar.set_postfix_str(
                        f"loss {s['loss']:.4f} lr {lr:.3g} {s['images_per_s']:.0f} img/s "
                        f"data {s['data_time'] * 1e3:.0f} ms",
                        refresh=False,
                    )
                    bar.update(1)
                if global_step % int(cfg["log_every"]) == 0:
                    s = window.summary()
                    logger.write(
                        {"type": "train", "step": global_step, "epoch": epoch, "lr": lr, **s}
                    )
                    window.reset()
            bar.close()

            s = whole.summary()
            entry: dict[str, Any] = {
                "type": "epoch",
                "step": global_step,
                "epoch": epoch,
                "lr": max(g["lr"] for g in optimizer.param_groups),
                "epoch_time": time.perf_counter() - epoch_start,
                **s,
            }
            last_epoch = epoch + 1 == epochs
            if last_epoch or (epoch + 1) % int(cfg["eval_every"]) == 0:
                entry.update(_validate(task, data, model, ema, plan, info, autocast))
            entry.update(task.on_epoch_end(epoch, model, out_dir) or {})
            entry.update(_bad_sample_counts(data, say))
            logger.write(entry)
            task.on_epoch_logged(epoch, entry, out_dir)
            say(
                f"epoch {epoch + 1}/{epochs}: "
                + " ".join(
                    f"{k} {v:.4g}"
                    for k, v in entry.items()
                    if k not in ("type", "step", "epoch") and isinstance(v, (int, float))
                )
            )
            last_metrics = entry
            if main:
                _save(
                    out_dir,
                    model,
                    optimizer,
                    scheduler,
                    scaler,
                    ema,
                    epoch + 1,
                    global_step,
                    cfg,
                    data.manifest_sha256,
                )
            D.barrier()
        bad = getattr(data, "bad_samples", None)
        if bad is not None and bad.total:
            say(bad.summary())
        if main:
            path = task.export(unwrap(model), out_dir / "model.safetensors")
            say(f"final weights: {path}")
            if ema is not None:
                ema_path = task.export(ema.module, out_dir / "model_ema.safetensors")
                say(f"EMA weights: {ema_path}")
        D.barrier()
    finally:
        logger.close()
    return last_metrics


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
        keep_copy(last, out_dir / f"checkpoint-{epoch:04d}.pt")
