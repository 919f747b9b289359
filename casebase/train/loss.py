"""The contrastive loss of `casebase train`: open_clip's SigLIP loss, same text = positive.

Why SigLIP and not ``ClipLoss``: with label or findings texts a batch holds many
copies of the same text ("no finding", "pneumonia"). CLIP's softmax has exactly
one right answer per row, so every other copy of the same text is pushed away
as a negative, same-label images are pushed apart, and the loss cannot fall
below log(copies). SigLIP scores each (image, text) pair as an independent
binary decision, so "this image matches all copies of 'pneumonia' and none of
'normal'" is a target it can express exactly: we only change its ground truth
(``get_ground_truth``) to mark same-text pairs positive. With free-text reports
(texts nearly all distinct) this is plain SigLIP.

Graded labels (``ordinal``: a Kellgren–Lawrence grade 0–4) get *soft* targets: a pair
one grade apart is half a positive (``neighbour`` = 0.5), two grades apart a negative,
and the per-pair loss becomes the binary cross-entropy with that target (for targets of
0 and 1 it is SigLIP's loss exactly). Exact-grade retrieval only rewards the same grade,
but a model that also knows grade 2 is nearer grade 1 than grade 4 learns the scale the
grades lie on instead of five unrelated classes.

SigLIP's temperature and bias (``siglip_head``) are trained alongside but kept
out of the checkpoint, whose state dict must match the base architecture
exactly; the bias starts at the log-odds of a same-text pair (SigLIP's
``-10`` is that prior for distinct texts in a large batch).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def shared_text_siglip_loss() -> Any:
    """A ``SigLipLoss`` whose ``targets`` (set before each call: an (n, n) tensor in
    [0, 1], image i against text j) replace the identity; ``None`` is plain SigLIP."""
    import torch.nn.functional as F
    from open_clip.loss import SigLipLoss

    class SharedTextSigLipLoss(SigLipLoss):
        """open_clip's SigLIP loss with given (soft) targets."""

        targets: Any = None

        def _loss(self, image_features, text_features, logit_scale, logit_bias=None, **kw):
            if self.targets is None or kw.get("negative_only"):
                return super()._loss(image_features, text_features, logit_scale, logit_bias, **kw)
            logits = self.get_logits(image_features, text_features, logit_scale, logit_bias)
            t = self.targets.to(device=logits.device, dtype=logits.dtype)
            loss = t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits)
            return -loss.sum() / image_features.shape[0]

    return SharedTextSigLipLoss()


def pair_targets(text_ids: Any, grades: Any = None, neighbour: float = 0.5) -> Any:
    """(n, n) targets: 1 for the same text; with ``grades`` (a float tensor), also
    ``max(0, 1 - |g_i - g_j| (1 - neighbour))``: ``neighbour`` one grade apart."""
    import torch

    same = (text_ids[:, None] == text_ids[None, :]).float()
    if grades is None:
        return same
    distance = (grades[:, None] - grades[None, :]).abs()
    return torch.maximum(same, (1 - distance * (1 - neighbour)).clamp(min=0.0))


def siglip_head(prior: float) -> Any:
    """SigLIP's temperature (log 10, as in the paper) and bias (log-odds of ``prior``)."""
    import torch

    class _Head(torch.nn.Module):
        """SigLIP's learned temperature and bias (training only, not in the checkpoint)."""

        def __init__(self) -> None:
            super().__init__()
            self.log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
            self.bias = torch.nn.Parameter(torch.tensor(math.log(prior / (1 - prior))))

    return _Head()


def same_text_prior(texts: list[str], batch_size: int) -> float:
    """Chance that two images of a batch share a text (at least the diagonal, 1/batch)."""
    _, counts = np.unique(texts, return_counts=True)
    p = float(((counts / counts.sum()) ** 2).sum())
    return min(0.5, max(p, 1.0 / max(2, batch_size)))
