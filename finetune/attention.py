"""What a ViT learned, as numbers: attention rollout, mean attention distance, position-embedding
similarity and linear CKA. Small pure functions on tensors; `fractaldb inspect` draws them.

Attention tensors are (batch, heads, tokens, tokens) softmax outputs, rows = queries; the first
`prefix` tokens are class / distillation / register tokens, the rest the patch grid in
row-major order.
"""

from __future__ import annotations

import torch


def attention_rollout(attentions: list[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Abnar & Zuidema (2020): the head-averaged attention of each layer, with the residual
    connection as 0.5 A + 0.5 I (rows renormalised), multiplied from the first layer to the
    last; (B, N, N), every row sums to 1."""
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer")
    rollout = None
    for attn in attentions:
        a = attn.float().mean(dim=1)  # (B, N, N)
        if residual:
            eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
            a = 0.5 * a + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    return rollout


def token_map(mix: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """How much each patch feeds the class token (row 0), or, without a class token
    (prefix 0), the average patch: (B, N, N) -> (B, gh, gw), normalised to sum 1."""
    rows = mix[:, 0] if prefix > 0 else mix[:, prefix:].mean(dim=1)
    patches = rows[:, prefix:]
    patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return patches.reshape(-1, *grid)


def patch_distances(grid: tuple[int, int], patch_size: int) -> torch.Tensor:
    """(P, P) Euclidean distances in pixels between the centres of the grid's patches."""
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    centres = torch.stack([ys.flatten(), xs.flatten()], dim=1).float() * patch_size
    return torch.cdist(centres, centres)


def mean_attention_distance(
    attn: torch.Tensor, grid: tuple[int, int], patch_size: int, prefix: int = 0
) -> torch.Tensor:
    """Per head, the pixel distance between a patch query and the patches it attends to,
    weighted by the attention (renormalised over patch keys) and averaged over queries and
    images (the ViT paper's Figure 7, right): (B, H, N, N) -> (H,)."""
    a = attn[:, :, prefix:, prefix:].float()
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    dist = patch_distances(grid, patch_size).to(a.device)
    return (a * dist).sum(dim=-1).mean(dim=(0, 2))


def position_similarity(pos_embed: torch.Tensor, prefix: int = 0) -> torch.Tensor:
    """Cosine similarity between the position embeddings of every pair of patches (the ViT
    paper's Figure 7, left): (1, prefix + P, D) or (P, D) -> (P, P)."""
    pe = pos_embed.detach().float().reshape(-1, pos_embed.shape[-1])[prefix:]
    pe = torch.nn.functional.normalize(pe, dim=-1)
    return pe @ pe.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al. 2019, as used by Raghu et al. 2021)
    between two representations of the same n examples, (n, p1) and (n, p2); in [0, 1]."""
    x = x.double().reshape(x.shape[0], -1)
    y = y.double().reshape(y.shape[0], -1)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = (y.T @ x).norm() ** 2
    norm = (x.T @ x).norm() * (y.T @ y).norm()
    return float(cross / norm) if norm > 0 else 0.0


def cka_matrix(layers_a: list[torch.Tensor], layers_b: list[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between every layer of A and every layer of B: (len A, len B). Each layer is
    (images, tokens, dim); with equal token counts every token is an example, otherwise each
    image's mean token is."""
    out = torch.zeros(len(layers_a), len(layers_b))
    for i, a in enumerate(layers_a):
        for j, b in enumerate(layers_b):
            if a.shape[:2] == b.shape[:2]:
                out[i, j] = linear_cka(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
            else:
                out[i, j] = linear_cka(a.mean(dim=1), b.mean(dim=1))
    return out
