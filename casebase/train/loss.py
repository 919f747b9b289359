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
    """A ``SigLipLoss`` whose ``text_ids`` (set before each call) mark same-text positives."""
    from open_clip.loss import SigLipLoss

    class SharedTextSigLipLoss(SigLipLoss):
        """open_clip's SigLIP loss; pairs with the same text id are positives too."""

        text_ids: Any = None

        def get_ground_truth(self, device, dtype, num_logits, negative_only=False):
            if self.text_ids is None or negative_only:
                return super().get_ground_truth(device, dtype, num_logits, negative_only)
            same = self.text_ids[:, None] == self.text_ids[None, :]
            return same.to(device=device, dtype=dtype) * 2 - 1

    return SharedTextSigLipLoss()


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
