"""Frozen-feature evaluation of a backbone: k-NN and linear-probe top-1 on its pooled features.

Both measure what pre-training put into the weights without any fine-tuning schedule to tune:
the backbone runs once over the training and validation images (evaluation transform, no
augmentation), then
- k-NN: cosine similarity to the training features, the k nearest vote with weight
  exp(similarity / T) (the weighted k-NN of Wu et al. 2018, as DINO reports it; k 20, T 0.07);
- linear probe: multinomial logistic regression on the standardised features, full-batch
  L-BFGS with a fixed L2 penalty (deterministic, no learning rate or epochs to choose).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KNN_K = 20
KNN_TEMPERATURE = 0.07
PROBE_WEIGHT_DECAY = 1e-4
PROBE_STEPS = 300


def pooled_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The representation the classifier head reads (timm's pre-logits: the pooled tokens)."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


@torch.no_grad()
def extract_features(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features float32 (N, D), labels int64 (N,)) of every batch, the model in eval mode."""
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for images, targets in batches:
            out = pooled_features(model, images.to(device, non_blocking=True))
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(targets).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(feats), torch.cat(labels)


def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    query_feats: torch.Tensor,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    chunk: int = 1024,
) -> torch.Tensor:
    """Class predicted for each query by a temperature-weighted vote of its k nearest
    training features (cosine similarity)."""
    bank = F.normalize(train_feats.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, query_feats.shape[0], chunk):
        q = F.normalize(query_feats[start : start + chunk].float(), dim=1)
        sims, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[idx], (sims / temperature).exp())
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_top1(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
) -> float:
    """k-NN top-1 (%) of the validation features against the training features."""
    pred = knn_predict(train_feats, train_labels, val_feats, num_classes, k, temperature)
    return 100.0 * (pred == val_labels).float().mean().item()


def fit_linear_probe(
    feats: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float = PROBE_WEIGHT_DECAY,
    steps: int = PROBE_STEPS,
) -> nn.Linear:
    """A linear classifier on standardised features (the scaling folded into its weights),
    trained by full-batch L-BFGS on cross-entropy plus an L2 penalty."""
    x = feats.double()
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    head = nn.Linear(z.shape[1], num_classes, dtype=torch.float64)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(z), labels) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    folded = nn.Linear(z.shape[1], num_classes)
    with torch.no_grad():
        w = head.weight / std
        folded.weight.copy_(w.float())
        folded.bias.copy_((head.bias - w @ mean).float())
    return folded


def linear_probe_top1(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    weight_decay: float = PROBE_WEIGHT_DECAY,
) -> float:
    """Linear-probe top-1 (%) on the validation features, the probe fit on the training ones."""
    head = fit_linear_probe(train_feats, train_labels, num_classes, weight_decay)
    with torch.no_grad():
        pred = head(val_feats.float()).argmax(dim=1)
    return 100.0 * (pred == val_labels).float().mean().item()


def probe_results(
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
) -> dict[str, Any]:
    """Both frozen-feature figures and what they were computed on, for probe.json."""
    (tf, tl), (vf, vl) = train, val
    return {
        "knn_top1": knn_top1(tf, tl, vf, vl, num_classes),
        "linear_top1": linear_probe_top1(tf, tl, vf, vl, num_classes),
        "knn": {"k": KNN_K, "temperature": KNN_TEMPERATURE},
        "linear": {"solver": "lbfgs", "weight_decay": PROBE_WEIGHT_DECAY, "steps": PROBE_STEPS},
        "train_samples": int(tl.numel()),
        "test_samples": int(vl.numel()),
        "feature_dim": int(tf.shape[1]) if tf.ndim == 2 else 0,
        "num_classes": num_classes,
    }
