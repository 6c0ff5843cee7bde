"""Distances between degradation severities, d(a, b) = mean_x M(A_a(x), A_b(x)), for the scheduler.

Every supported metric is (a function of) a squared Euclidean distance between per-image
feature vectors: MSE between pixels, and LPIPS, which is sum_l mean_hw sum_c w_lc (n_l(a) -
n_l(b))_c^2 = ||phi(a) - phi(b)||^2 with phi(x) = concat_l sqrt(w_l / (H_l W_l)) n_l(x)
(n_l: channel-normalised backbone features, w_l >= 0: LPIPS's linear heads). So each candidate
severity is embedded once and every pair distance afterwards is vector algebra instead of one
network pass per pair. When all embeddings fit in memory (small images) every pair distance is
computed up front with one Gram matrix per image; otherwise (256 px, fine grids) embeddings
live in a bounded LRU cache and are recomputed as the greedy iterations need them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from diracbench.errors import UserError

METRICS = ("lpips", "mse", "rmse")

Degrade = Callable[[np.ndarray], torch.Tensor]  # candidate indices (m,) -> (m, n, C, H, W)
Embed = Callable[[torch.Tensor], torch.Tensor]  # (B, C, H, W) -> (B, D) float32


class FeatureDistance:
    """d(i, j) = mean over images of g(||phi(A_i x) - phi(A_j x)||^2), g = identity or sqrt.

    `degrade(idx)` returns the degraded image set of each candidate, `embed` maps images to
    feature vectors. Call as `distance(i, js)` (the scheduler's DistanceFn).
    """

    def __init__(self, degrade: Degrade, embed: Embed, n_images: int, root: bool = False, batch_images: int = 64, cache_bytes: int = 2 << 30) -> None:
        self.degrade, self.embed = degrade, embed
        self.n_images = int(n_images)
        self.root = root
        self.batch_images = max(1, int(batch_images))
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.embedded = 0  # candidate embeddings computed (for logs and tests)
        self._dense: np.ndarray | None = None

    def _features(self, idx: list[int]) -> list[torch.Tensor]:
        missing = [i for i in dict.fromkeys(idx) if i not in self._cache]
        fresh: dict[int, torch.Tensor] = {}
        per_batch = max(1, self.batch_images // self.n_images)
        for start in range(0, len(missing), per_batch):
            chunk = missing[start : start + per_batch]
            imgs = self.degrade(np.asarray(chunk))
            feats = self.embed(imgs.reshape(-1, *imgs.shape[2:])).reshape(len(chunk), self.n_images, -1)
            for k, i in enumerate(chunk):
                fresh[i] = feats[k].contiguous()
                self.embedded += 1
        out = []
        for i in idx:
            f = fresh[i] if i in fresh else self._cache[i]
            self._remember(i, f)
            out.append(f)
        return out

    def _remember(self, i: int, f: torch.Tensor) -> None:
        if i in self._cache:
            self._cache.move_to_end(i)
            return
        size = f.numel() * f.element_size()
        if size > self.cache_bytes:
            return
        self._cache[i] = f
        self._bytes += size
        while self._bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self._bytes -= old.numel() * old.element_size()

    @torch.no_grad()
    def precompute(self, n_candidates: int) -> bool:
        """All pair distances at once when every embedding fits in the cache budget.

        One Gram matrix per image gives ||a||^2 + ||b||^2 - 2 a.b for all pairs; the features are
        centred over candidates first, so the float32 products keep the small distances between
        neighbouring severities accurate. Returns False (lazy pairs) when the embeddings do not fit.
        """
        first = self._features([0])[0]
        if n_candidates * first.numel() * first.element_size() > self.cache_bytes:
            return False
        feats = torch.stack(self._features(list(range(n_candidates))), dim=1)  # (n, G, D)
        self._cache.clear()
        self._bytes = 0
        feats.sub_(feats.mean(dim=1, keepdim=True))
        sq = torch.empty(self.n_images, n_candidates, n_candidates, dtype=torch.float64)
        for k in range(self.n_images):
            f = feats[k]
            gram = (f @ f.T).double()
            norms = gram.diagonal()
            sq[k] = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min(0)
        per_image = sq.sqrt() if self.root else sq
        self._dense = per_image.mean(0).numpy()
        return True

    @torch.no_grad()
    def __call__(self, i: int, js: np.ndarray) -> np.ndarray:
        js = np.asarray(js, dtype=np.int64).reshape(-1)
        if self._dense is not None:
            return self._dense[int(i), js]
        ref = self._features([int(i)])[0]
        out = np.empty(len(js), dtype=np.float64)
        chunk = max(1, self.batch_images // self.n_images)
        for start in range(0, len(js), chunk):
            part = [int(j) for j in js[start : start + chunk]]
            feats = torch.stack(self._features(part))  # (m, n, D)
            # float32 differences of float32 features are exact enough; accumulate in float64.
            sq = torch.sub(feats, ref).square_().sum(-1, dtype=torch.float64)  # (m, n)
            per_image = sq.clamp_min(0).sqrt() if self.root else sq
            out[start : start + len(part)] = per_image.mean(-1).cpu().numpy()
        return out


def pixel_embedding(x: torch.Tensor) -> torch.Tensor:
    """Pixels scaled so that ||phi(a) - phi(b)||^2 is the per-image MSE."""
    flat = x.flatten(1).float()
    return flat / math.sqrt(flat.shape[1])


class LPIPSEmbedding:
    """phi(x) with ||phi(a) - phi(b)||^2 = LPIPS(a, b) of `diracbench.metrics.perceptual.LPIPSMetric`."""

    def __init__(self, net: str, upsample_below: int, device: torch.device | str = "cpu") -> None:
        from diracbench.metrics.perceptual import LPIPSMetric

        metric = LPIPSMetric(net=net, upsample_below=upsample_below, device=device)
        self.metric = metric
        self.model = metric.model
        self.device = torch.device(device)
        self.upsample_below = int(upsample_below)
        self.weights = []
        for lin in self.model.lins:
            w = lin.model[-1].weight.detach().reshape(1, -1, 1, 1).float()
            if torch.any(w < 0):
                raise UserError("this LPIPS head has negative weights, so it is not a squared feature distance; use metric 'mse' for the schedule")
            self.weights.append(w.sqrt().to(self.device))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from diracbench.metrics.perceptual import upsample_factor

        x = x.to(self.device, torch.float32).clamp(0.0, 1.0)
        k = upsample_factor(min(x.shape[-2:]), self.upsample_below)
        if k > 1:  # the same bilinear upsampling the LPIPS metric applies to small images
            x = F.interpolate(x, scale_factor=k, mode="bilinear", align_corners=False)
        outs = self.model.net.forward(self.model.scaling_layer(x * 2 - 1))
        parts = []
        for f, w in zip(outs, self.weights):
            n = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            parts.append((n * w).flatten(1) / math.sqrt(f.shape[-2] * f.shape[-1]))
        return torch.cat(parts, dim=1).float()


def make_embedding(metric: str, lpips_settings: dict | None, device: torch.device) -> tuple[Embed, bool]:
    """(embed, root) for a metric name: rmse is the square root of the per-image MSE."""
    if metric == "lpips":
        if not lpips_settings:
            raise UserError("schedule metric 'lpips' needs the LPIPS settings (net, upsample_below)")
        return LPIPSEmbedding(lpips_settings["net"], lpips_settings["upsample_below"], device), False
    if metric == "mse":
        return pixel_embedding, False
    if metric == "rmse":
        return pixel_embedding, True
    raise UserError(f"unknown schedule metric {metric!r}; use one of {list(METRICS)}")
