"""MAE pre-training as a Task of the one training engine (pretrain/engine/loop.py).

The engine does everything generic (distribution, AMP, schedule, checkpoints, exact resume);
this module supplies the MaskedAutoencoder, its unlabelled loss, a fixed-mask validation loss,
the encoder-only export and the per-epoch reconstruction pictures.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractaldb.core.errors import FractalDBError
from pretrain.engine import distributed as D
from pretrain.engine.augment import AugmentConfig, eval_resize
from pretrain.engine.config import on_device
from pretrain.engine.data import epoch_seed
from pretrain.engine.hf_models import is_hf_model
from pretrain.engine.models import check_model_name, export_safetensors
from pretrain.engine.task import Task
from pretrain.mae import MaskedAutoencoder, check_mask_ratio
from pretrain.mae_picture import save_reconstruction

# Stands in for the epoch in epoch_seed(): the validation mask stream, fixed for the whole run,
# separate from every training epoch's stream.
VAL_MASK_STREAM = 1_000_003


def _interpolation(name: str) -> Any:
    """torchvision's InterpolationMode for a config name, with a one-line error."""
    from torchvision.transforms import InterpolationMode

    try:
        return InterpolationMode(name)
    except ValueError:
        names = ", ".join(m.value for m in InterpolationMode)
        raise FractalDBError(
            f"unknown interpolation {name!r}; fix: --set interpolation=bicubic (or {names})"
        ) from None


def _first_images(loader: Iterable | None, n: int) -> torch.Tensor | None:
    """The first `n` images of a loader's first batch (labels, if any, are dropped)."""
    if loader is None:
        return None
    batch = next(iter(loader), None)
    if batch is None:
        return None
    images = batch[0] if isinstance(batch, (list, tuple)) else batch
    images = images[:n].detach().cpu()
    return images if images.dtype == torch.uint8 else images.float()


class MAETask(Task):
    """Masked-autoencoder pre-training of a timm ViT encoder; labels in the data are ignored."""

    name = "mae"
    defaults: dict[str, Any] = {
        # He et al., CVPR 2022 (Appendix A.1): these override the engine's supervised defaults so
        # a run without a recipe is still an MAE run; the mae-* recipes cite each value.
        "blr": 1.5e-4,
        "lr_base_size": 256,
        "opt_betas": [0.9, 0.95],
        "warmup_epochs": 40,
        "warmup_lr": 0.0,
        "min_lr": 0.0,
        "drop_path": 0.0,
        "mask_ratio": 0.75,
        "norm_pix_loss": True,
        "decoder_dim": 192,
        "decoder_depth": 4,
        "decoder_heads": 6,
        "scale": [0.2, 1.0],
        "hflip": 0.5,
        "interpolation": "bicubic",
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        # reconstruction pictures: every N epochs (and after the last), of this many images
        "recon_every": 10,
        "recon_images": 8,
    }

    def setup(self, cfg: dict[str, Any], num_classes: int | None) -> None:
        """Check the mask ratio and the model's shapes before any file or process is touched."""
        super().setup(cfg, num_classes)
        if is_hf_model(cfg["model"]):
            raise FractalDBError(
                f"MAE needs a timm ViT encoder, not {cfg['model']}; fix: --model "
                "vit_tiny_patch16_224 (train hf: models with `fractaldb pretrain supervised`)"
            )
        check_model_name(cfg["model"])
        check_mask_ratio(cfg["mask_ratio"])
        if int(cfg["recon_every"]) < 1 or int(cfg["recon_images"]) < 1:
            raise FractalDBError(
                f"recon_every {cfg['recon_every']} and recon_images {cfg['recon_images']} must be "
                ">= 1; fix: e.g. --set recon_every=10"
            )
        # Shapes only: a meta-device build validates patch size vs. image size, decoder shape
        # and encoder type with the model's own one-line errors, at no memory cost.
        with torch.device("meta"):
            probe = self._new_model()
        self.in_chans = probe.in_chans
        self.mean = self._channel_stats(cfg["mean"], "mean")
        self.std = self._channel_stats(cfg["std"], "std")
        self.recon_images: torch.Tensor | None = None
        self.augment_config = self._augment_config(cfg, self.in_chans)
        self.batch_augment = self.batch_augment_for(self.augment_config)

    def _augment_config(self, cfg: dict[str, Any], in_chans: int) -> AugmentConfig:
        """MAE's augmentation for the batched path: crop, flip, normalise (no RandAugment)."""
        mean, std = cfg["mean"], cfg["std"]
        if in_chans == 1:
            mean, std = mean[:1], std[:1]
        return AugmentConfig(
            img_size=int(cfg["img_size"]),
            scale=tuple(cfg["scale"]),
            interpolation=cfg["interpolation"],
            hflip=float(cfg["hflip"]),
            mean=tuple(float(v) for v in mean),
            std=tuple(float(v) for v in std),
            out_channels=in_chans,
        )

    def _channel_stats(self, values: list[float], key: str) -> list[float]:
        """mean/std for the encoder's channel count (gray uses the first value)."""
        values = [float(v) for v in values]
        if len(values) == self.in_chans:
            return values
        if self.in_chans == 1 and len(set(values)) == 1:
            return values[:1]
        raise FractalDBError(
            f"{key} has {len(values)} values but the encoder takes {self.in_chans} channels; "
            f"fix: --set {key}=[...] with {self.in_chans} values"
        )

    def _new_model(self) -> MaskedAutoencoder:
        cfg = self.cfg
        args = dict(cfg["model_args"])
        if float(cfg["drop_path"]) > 0:
            args.setdefault("drop_path_rate", float(cfg["drop_path"]))
        return MaskedAutoencoder(
            cfg["model"],
            int(cfg["img_size"]),
            model_args=args,
            decoder_dim=int(cfg["decoder_dim"]),
            decoder_depth=int(cfg["decoder_depth"]),
            decoder_heads=int(cfg["decoder_heads"]),
            mask_ratio=float(cfg["mask_ratio"]),
            norm_pix_loss=bool(cfg["norm_pix_loss"]),
        )

    def build_model(self) -> nn.Module:
        """MaskedAutoencoder(cfg model, img_size, model_args, decoder_*, mask_ratio, norm_pix);
        its encoder from `init_weights` when given (e.g. supervised fractal training first)."""
        model = self._new_model()
        if self.cfg.get("init_weights"):
            from pretrain.engine.models import load_matching_weights

            load_matching_weights(model.encoder, self.cfg["init_weights"])
        return model

    def _pil_to_tensor(self, cfg: dict[str, Any]) -> list[Any]:
        from torchvision import transforms as T

        in_chans = int(cfg["model_args"].get("in_chans", 3))
        steps: list[Any] = [T.Grayscale(1)] if in_chans == 1 else []
        mean, std = cfg["mean"], cfg["std"]
        if in_chans == 1:
            mean, std = mean[:1], std[:1]
        return [*steps, T.ToTensor(), T.Normalize(mean, std)]

    def train_transform(self, cfg: dict[str, Any]) -> Any:
        """MAE's augmentation (main_pretrain.py): RandomResizedCrop, flip, normalise.

        Loaders deliver RGB (gray fractals repeated to 3 channels, as for supervised
        training); with --model-arg in_chans=1 the images are converted back to one channel.
        None with --augment device: the same steps run in `augment`, on the device.
        """
        if on_device(cfg):
            _interpolation(cfg["interpolation"])  # bad settings fail before any loader
            in_chans = int(cfg["model_args"].get("in_chans", 3))
            # bad settings fail before any loader; the same object augments after setup
            self.batch_augment_for(self._augment_config(cfg, in_chans))
            return None
        from torchvision import transforms as T

        mode = _interpolation(cfg["interpolation"])
        return T.Compose(
            [
                T.RandomResizedCrop(
                    int(cfg["img_size"]), scale=tuple(cfg["scale"]), interpolation=mode
                ),
                T.RandomHorizontalFlip(float(cfg["hflip"])),
                *self._pil_to_tensor(cfg),
            ]
        )

    def eval_transform(self, cfg: dict[str, Any]) -> Any:
        """Resize + centre crop to img_size, normalise (no augmentation)."""
        from torchvision import transforms as T

        size = int(cfg["img_size"])
        mode = _interpolation(cfg["interpolation"])
        return T.Compose(
            [T.Resize(size, interpolation=mode), T.CenterCrop(size), *self._pil_to_tensor(cfg)]
        )

    def augment(self, batch: Any) -> Any:
        """uint8 batches: RandomResizedCrop, flip, channels and normalisation on the device."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        if images.dtype != torch.uint8:
            return batch
        images = self.batch_augment(images)
        return (images, *batch[1:]) if isinstance(batch, (list, tuple)) else images

    def train_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """Masked reconstruction loss; the mask comes from torch's global RNG, which the engine
        reseeds per (seed, epoch, rank), so a resumed epoch draws the same masks."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        loss, _, _ = model(images)
        return loss, {}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterable, device: torch.device
    ) -> dict[str, float]:
        """val_loss: the masked reconstruction loss with a fixed-seed mask, over all ranks."""
        gen = torch.Generator().manual_seed(
            epoch_seed(int(self.cfg["seed"]), VAL_MASK_STREAM, D.get_rank())
        )
        totals: dict[str, Any] = {"n": 0.0, "loss": torch.zeros((), device=device)}
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            images = images.to(device, non_blocking=True)
            # Every sample has the same number of masked patches, so the batch mean weights
            # samples equally and the per-sample mean is exact.
            loss, _, _ = model(images, generator=gen)
            totals["loss"] += loss.detach().float() * len(images)  # no per-batch host read
            totals["n"] += len(images)
        t = D.reduce_sums(totals, device)
        return {"val_loss": t["loss"] / max(t["n"], 1.0), "val_samples": int(t["n"])}

    def export(self, model: nn.Module, path: Path) -> Path:
        """The encoder only, loadable by timm.create_model(name, pretrained=True,
        pretrained_cfg_overlay=dict(file=path), num_classes=0, **model_args)."""
        args = {**self.cfg["model_args"], "img_size": int(self.cfg["img_size"])}
        return export_safetensors(model.encoder, path, self.cfg["model"], args, 0)

    def _fixed_images(self) -> torch.Tensor | None:
        """A few held-out images, the same for the whole run (and after a resume): the first
        validation batch, else the first training batch of epoch 0 (rank 0's)."""
        if self.recon_images is None:
            from pretrain.engine.loop import plan_batch

            n = int(self.cfg["recon_images"])
            data = self.data_source
            images = _first_images(data.val_loader(batch_size=n, rank=0, world_size=1), n)
            if images is None:
                world = D.get_world_size()
                micro = plan_batch(self.cfg, world).micro_batch
                loader = data.train_loader(
                    0, batch_size=micro, seed=int(self.cfg["seed"]), rank=0, world_size=world
                )
                images = _first_images(loader, n)
            if images is not None and images.dtype == torch.uint8:  # device path: raw pixels
                images = eval_resize(images, self.augment_config)
            self.recon_images = images
        return self.recon_images

    def on_epoch_end(self, epoch: int, model: nn.Module, out_dir: Path) -> dict[str, float]:
        """Write RUN/reconstruction-epochNNN.png every recon_every epochs and after the last."""
        done = epoch + 1
        if not D.is_main_process():
            return {}
        if done % int(self.cfg["recon_every"]) and done != int(self.cfg["epochs"]):
            return {}
        images = self._fixed_images()
        if images is None:
            return {}
        save_reconstruction(
            Path(out_dir) / f"reconstruction-epoch{done:03d}.png",
            model,
            images,
            seed=0,
            mean=self.mean,
            std=self.std,
        )
        return {}

    def describe(self) -> list[str]:
        """Log the masking, decoder, loss target and augmentation actually used."""
        c = self.cfg
        return [
            f"model: MAE encoder {c['model']} {c['model_args']} (in_chans {self.in_chans}), "
            f"decoder {c['decoder_dim']}-d x {c['decoder_depth']} blocks x "
            f"{c['decoder_heads']} heads, drop_path={c['drop_path']}",
            f"loss: MSE on masked patches, mask_ratio={c['mask_ratio']}, "
            f"norm_pix_loss={c['norm_pix_loss']} (labels ignored)",
            f"augmentation ({'device, batched' if on_device(c) else 'cpu, PIL in workers'}): "
            f"RandomResizedCrop {c['img_size']} scale={tuple(c['scale'])} "
            f"{c['interpolation']}, hflip={c['hflip']}, mean={tuple(self.mean)}, "
            f"std={tuple(self.std)}; reconstructions every {c['recon_every']} epochs",
        ]
