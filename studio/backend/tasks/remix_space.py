"""DALL·E 2's image-space operations on CLIP image embeddings (Ramesh et al. 2022, unCLIP).

Pure tensor maths, no models: the Remix task embeds its pictures and captions, mixes them
here, and hands the result to IP-Adapter as `ip_adapter_image_embeds`. The toy world's
training and evaluation use the same functions, so what is trained is what is served.

- **interpolation**: normalised embeddings are blended along the sphere (slerp for two, a
  weighted spherical mean for more), then rescaled to the inputs' weighted mean norm, since
  IP-Adapter's projection was trained on unnormalised image embeddings.
- **text diffs**: `d = normalise(text(to) - text(from))`; the normalised image embedding is
  slerped towards `d` by `amount`, then rescaled to the image embedding's norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

_EPS = 1e-7


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between unit vectors `a` and `b` (last dim), `t` in 0..1.

    Nearly parallel vectors fall back to a normalised linear blend (slerp's limit)."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    dot = (a * b).sum(-1, keepdim=True).clamp(-1 + _EPS, 1 - _EPS)
    omega = torch.arccos(dot)
    so = torch.sin(omega)
    if float(so.abs().min()) < 1e-4:
        return F.normalize((1 - t) * a + t * b, dim=-1)
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so


def spherical_mean(vectors: torch.Tensor, weights: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Weighted spherical (Karcher) mean of the unit vectors `vectors` (N, D).

    Two vectors give exactly slerp(a, b, w_b / (w_a + w_b)); a vector with all the weight is
    returned as it is. A few fixed-point iterations in the tangent space (Buss & Fillmore
    2001) converge for vectors in one hemisphere, which CLIP embeddings of images are."""
    v = F.normalize(vectors.float(), dim=-1)
    w = weights.float() / weights.float().sum()
    if len(v) == 1 or float(w.max()) >= 1 - _EPS:
        return v[int(torch.argmax(w))]
    if len(v) == 2:
        return slerp(v[0], v[1], float(w[1]))
    mean = F.normalize((w[:, None] * v).sum(0), dim=-1)
    for _ in range(iters):
        dot = (v @ mean).clamp(-1 + _EPS, 1 - _EPS)
        theta = torch.arccos(dot)
        tangent = v - dot[:, None] * mean
        scale = torch.where(theta > 1e-6, theta / torch.sin(theta).clamp_min(_EPS),
                            torch.ones_like(theta))
        step = (w * scale)[:, None].mul(tangent).sum(0)
        norm = float(step.norm())
        if norm < 1e-7:
            break
        mean = F.normalize(mean * torch.cos(torch.tensor(norm)) + step / norm
                           * torch.sin(torch.tensor(norm)), dim=-1)
    return mean


def interpolate(embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Blend image embeddings `embeds` (N, D) by non-negative `weights` (N,): the weighted
    spherical mean of the normalised embeddings at the weighted mean of their norms."""
    nonzero = torch.nonzero(weights > 0).flatten()
    if len(nonzero) == 1:  # one picture with all the weight: its embedding, exactly
        return embeds[int(nonzero[0])].float()
    w = weights.float() / weights.float().sum()
    norm = (w * embeds.float().norm(dim=-1)).sum()
    return spherical_mean(embeds, weights) * norm


def text_diff(image: torch.Tensor, text_from: torch.Tensor, text_to: torch.Tensor,
              amount: float) -> torch.Tensor:
    """Move image embedding `image` (D,) along the caption direction from `text_from` to
    `text_to` (both (D,), in the same CLIP space) by `amount` in 0..1 (0 = unchanged)."""
    if amount <= 0:
        return image.float()
    direction = F.normalize((text_to.float() - text_from.float()), dim=-1)
    return slerp(image, direction, amount) * image.float().norm()
