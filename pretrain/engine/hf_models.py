"""Hugging Face `transformers` image classifiers (`--model hf:cvt-13`), built offline from their
configuration class and wrapped so that the engine sees a plain logits-out classifier.

`transformers` is an optional dependency (`pip install 'fractaldb[hf]'`); it is imported only
when an `hf:` model is asked for. A run also writes RUN/hf/, a folder that
`CvtForImageClassification.from_pretrained(RUN/hf)` loads without network access.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractaldb.core.errors import FractalDBError

PREFIX = "hf:"
INSTALL_HINT = "pip install 'fractaldb[hf]' (in a checkout: uv sync --extra hf)"

# CvT layer settings (Wu et al. 2021, table 2; the microsoft/cvt-13 and cvt-21 configs on the
# Hugging Face hub). Everything not listed is CvtConfig's default, which is CvT-13's.
_CVT_STAGES = {
    "embed_dim": [64, 192, 384],
    "num_heads": [1, 3, 6],
    "patch_sizes": [7, 3, 3],
    "patch_stride": [4, 2, 2],
    "patch_padding": [2, 1, 1],
}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "cvt-13": {"family": "cvt", "config": {**_CVT_STAGES, "depth": [1, 2, 10]}},
    "cvt-21": {"family": "cvt", "config": {**_CVT_STAGES, "depth": [1, 4, 16]}},
}


def is_hf_model(name: str | None) -> bool:
    """True for `hf:` model names."""
    return isinstance(name, str) and name.startswith(PREFIX)


def _transformers() -> Any:
    """Import transformers, or fail with one line naming the install command."""
    try:
        import transformers
    except ImportError as err:
        raise FractalDBError(
            f"Hugging Face models need the optional transformers package; fix: {INSTALL_HINT}"
        ) from err
    return transformers


def check_hf_name(name: str) -> str:
    """Return `name` if it names a known `hf:` architecture and transformers is installed."""
    arch = name[len(PREFIX) :]
    if arch not in ARCHITECTURES:
        raise FractalDBError(
            f"unknown Hugging Face model {name!r}; fix: use one of "
            f"{', '.join(PREFIX + a for a in ARCHITECTURES)}"
        )
    _transformers()
    return name


def build_config(name: str, num_classes: int | None, drop_path_rate: float, **overrides: Any):
    """The transformers configuration of `name` for `num_classes` labels; --model-arg values
    override configuration fields (e.g. depth=[1,1,1] for a tiny test model)."""
    check_hf_name(name)
    from transformers import CvtConfig

    fields = dict(ARCHITECTURES[name[len(PREFIX) :]]["config"])
    # CvT puts stochastic depth on the last stage only (drop_path_rate [0, 0, 0.1]).
    fields["drop_path_rate"] = [0.0] * (len(fields["depth"]) - 1) + [float(drop_path_rate)]
    fields.update(overrides)
    if num_classes:
        fields["num_labels"] = int(num_classes)
    depth = list(fields["depth"])
    if any(int(d) <= i for i, d in enumerate(depth)):
        # transformers' CvtStage indexes its per-layer drop-path list by the stage number
        raise FractalDBError(
            f"transformers' CvT needs more than i layers in stage i, got depth={depth}; "
            "fix: e.g. --model-arg depth=[1,2,3]"
        )
    try:
        return CvtConfig(**fields)
    except (TypeError, ValueError) as e:
        raise FractalDBError(
            f"transformers could not build {name} with {overrides}: {e}; "
            "fix: check the --model-arg values (CvtConfig fields)"
        ) from e


class HFClassifier(nn.Module):
    """A transformers image classifier whose forward returns the logits tensor."""

    def __init__(self, name: str, hf_model: nn.Module, model_args: dict[str, Any]) -> None:
        """Wrap `hf_model` (built from `name` with `model_args` overrides)."""
        super().__init__()
        self.model = hf_model
        self.fractaldb_model_args = dict(model_args)
        self.num_classes = int(hf_model.config.num_labels)
        # what finetune/weights.py reads to drop a head of another class count
        self.pretrained_cfg = {"architecture": name, "classifier": "model.classifier"}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B x classes) of a batch of images."""
        return self.model(pixel_values=images).logits

    def get_classifier(self) -> nn.Module:
        """The classification head (for linear probing)."""
        return self.model.classifier


def create_hf_model(
    name: str, num_classes: int | None = None, drop_path_rate: float = 0.0, **model_args: Any
) -> HFClassifier:
    """A randomly initialised `hf:` classifier, built from its configuration (no download)."""
    from transformers import CvtForImageClassification

    config = build_config(name, num_classes, drop_path_rate, **model_args)
    return HFClassifier(name, CvtForImageClassification(config), model_args)


def save_hf_folder(model: HFClassifier, folder: Path) -> Path:
    """Write `folder` with save_pretrained (config.json + model.safetensors), replacing an old one
    only once the new one is complete."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the engine prints one line per export
    try:
        model.model.save_pretrained(str(tmp), safe_serialization=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def hf_folder_for(weights_path: Path) -> Path:
    """RUN/hf beside RUN/model.safetensors, RUN/hf-ema beside RUN/model_ema.safetensors."""
    weights_path = Path(weights_path)
    suffix = weights_path.stem.removeprefix("model")  # "" or "_ema"
    return weights_path.with_name("hf" + suffix.replace("_", "-"))
