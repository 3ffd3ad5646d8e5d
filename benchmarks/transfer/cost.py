"""Pre-training cost per arm: steps, images seen and approximate training FLOPs.

FLOPs are counted analytically (2 per multiply-add, matrix products only: patch embedding,
attention and MLP of every block, the MAE decoder and the classifier head) and training is taken
as 3x the forward pass (backward about twice the forward). The MAE encoder sees only its visible
patches (25 % at mask ratio 0.75) and the cls token; its decoder sees every token."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from benchmarks.transfer.budgets import Budget

MASK_RATIO = 0.75  # the mae-vit-tiny-fractal recipe's
# timm vit_tiny_patch16_224, before the budget's --model-arg overrides
_VIT_TINY = {"patch_size": 16, "depth": 12, "embed_dim": 192, "mlp_ratio": 4.0}


@dataclass(frozen=True)
class Cost:
    """What one pre-training (with the pre-trainings it starts from) spent."""

    steps: int
    images: int
    flops: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.steps + other.steps, self.images + other.images, self.flops + other.flops)

    def as_dict(self) -> dict[str, float]:
        """JSON-ready figures."""
        return asdict(self)


NO_COST = Cost(0, 0, 0.0)


def vit_dims(b: Budget) -> dict[str, float]:
    """Patch size, depth, width and MLP ratio of the budget's ViT."""
    dims = dict(_VIT_TINY)
    for arg in b.model_args:
        key, _, value = arg.partition("=")
        if key in dims:
            dims[key] = float(value)
    return dims


def blocks_flops(tokens: float, width: float, depth: float, mlp_ratio: float) -> float:
    """Forward FLOPs of `depth` transformer blocks on `tokens` tokens: qkv, q.k, attn.v,
    projection and the two MLP layers."""
    per_block = 2 * tokens * width * width * (4 + 2 * mlp_ratio) + 4 * tokens * tokens * width
    return depth * per_block


def forward_flops(b: Budget, kind: str, num_classes: int = 0) -> float:
    """Forward FLOPs of one image at the budget's pre-training resolution: the supervised ViT
    (with its head), or the MAE encoder on the visible patches plus its decoder."""
    d = vit_dims(b)
    patch, width = d["patch_size"], d["embed_dim"]
    tokens = (b.img_size // patch) ** 2
    embed = 2 * tokens * patch * patch * 3 * width
    if kind == "sup":
        return (
            embed
            + blocks_flops(tokens + 1, width, d["depth"], d["mlp_ratio"])
            + 2 * width * num_classes
        )
    visible = round((1 - MASK_RATIO) * tokens) + 1
    dec_dim, dec_depth, _ = b.mae_decoder
    encoder = blocks_flops(visible, width, d["depth"], d["mlp_ratio"])
    decoder = 2 * visible * width * dec_dim  # decoder_embed
    decoder += blocks_flops(tokens + 1, dec_dim, dec_depth, 4.0)
    decoder += 2 * (tokens + 1) * dec_dim * patch * patch * 3  # decoder_pred
    return embed + encoder + decoder


def pretrain_cost(
    b: Budget, kind: str, epochs: int, samples: int, batch: int, num_classes: int = 0
) -> Cost:
    """Steps (epochs x samples / batch), images seen and training FLOPs (3x forward) of one
    pre-training."""
    images = epochs * samples
    return Cost(
        epochs * (samples // batch), images, 3.0 * forward_flops(b, kind, num_classes) * images
    )
