"""One training run's mutable state: the epochs, the held-out P@k, what resuming restores.

Split from :mod:`casebase.train.loop` (which sets a run up and returns its result) so
each stays small: here is what happens *during* a run — an epoch over the training
pairs (in a seeded, optionally class-balanced order, through the augmenting loader),
one optimiser step per batch with SigLIP targets (same text, or soft ordinal targets),
the held-out P@k after each epoch, and the bookkeeping that makes a run resumable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from casebase.embedding.checkpoint import MODEL_FILE, write_checkpoint
from casebase.embedding.encoder import embed_images
from casebase.embedding.precision import autocast
from casebase.embedding.workers import worker_init
from casebase.errors import CasebaseError
from casebase.progress import progress_bar
from casebase.train import checkpoint as ck
from casebase.train.data import Pair, PairImages, collate, epoch_order, precision_at_k
from casebase.train.loss import pair_targets, shared_text_siglip_loss

log = logging.getLogger(__name__)

HELD_OUT_CACHE_BYTES = 256 << 20  # held-out tensors kept between epochs, at most


def lr_at(step: int, total: int, lr: float) -> float:
    """Linear warm-up (10 %, at most 1000 steps), then cosine decay to 0."""
    warm = max(1, min(1000, total // 10))
    if step < warm:
        return lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


class Run:
    """The mutable state of one training run, and what it saves to resume."""

    def __init__(
        self,
        *,
        out: Path,
        model: Any,
        head: Any,
        opt: Any,
        start: ck.Base,
        fingerprint: dict,
        k: int,
        seed: int,
        device: str,
        workers: int | None,
        progress: bool | None,
        precision: str = "fp32",
        balanced: bool = False,
        grades: dict[int, float] | None = None,
        neighbour: float = 0.5,
    ) -> None:
        """``start.config.tta`` (``"hflip"``) also applies to the held-out vectors, so the
        epoch chosen is the best one as ingest will embed with it."""
        import open_clip

        self.out, self.model, self.head, self.opt = out, model, head, opt
        self.precision = precision  # the steps' autocast (embedding/precision.py)
        self._channels_last = precision == "bf16" and device == "cpu"
        if self._channels_last:  # oneDNN's bf16 convolutions want NHWC
            import torch

            self.model.to(memory_format=torch.channels_last)
        self.start, self.fingerprint, self.k, self.seed = start, fingerprint, k, seed
        self.device, self.progress = device, progress
        self.balanced, self.grades, self.neighbour = balanced, grades, neighbour
        self.workers = workers if workers is not None else (0 if device == "cpu" else 4)
        self.tokenizer = open_clip.get_tokenizer(start.arch)
        self.loss_fn = shared_text_siglip_loss()
        self.epoch, self.step, self.stale = 0, 0, 0
        self.best, self.best_epoch = -1.0, 0
        self.baseline: float | None = None
        self.sha: str | None = None
        self.history: list[dict[str, Any]] = []
        self._held_tensors: list[tuple[Any, list[int]]] | None = None

    # ------------------------------------------------------------------ resume
    def restore(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.head.load_state_dict(saved["head"])
        self.opt.load_state_dict(saved["optimizer"])
        self.epoch, self.step, self.stale = saved["epoch"], saved["step"], saved["stale"]
        self.best, self.best_epoch = saved["best"], saved["best_epoch"]
        self.baseline, self.sha = saved["baseline"], saved["sha256"]
        self.history = list(saved["history"])
        log.info(
            "resuming %s after epoch %d (best held-out P@%d %.3f at epoch %d)",
            self.out,
            self.epoch,
            self.k,
            self.best,
            self.best_epoch,
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "held_out_precision": self.best,
            "baseline_precision": self.baseline,
            "history": self.history,
        }

    # ------------------------------------------------------------------ one epoch
    def train_epoch(
        self,
        epoch: int,
        pairs: list[Pair],
        load: Callable[[str], Any],
        *,
        batch_size: int,
        lr: float,
        total_steps: int,
        deadline: float | None,
    ) -> tuple[float, bool]:
        import torch
        from torch.utils.data import DataLoader

        with torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone
            torch.manual_seed(self.seed * 100_003 + epoch)  # augmentations: same on a re-run
            order = epoch_order(
                [p.text for p in pairs], seed=self.seed, epoch=epoch, balanced=self.balanced
            )
            ordered = [pairs[i] for i in order]
            loader: Any = DataLoader(
                PairImages([p.uri for p in ordered], None, load=load),  # type: ignore[arg-type]
                batch_size=batch_size,
                shuffle=False,
                num_workers=self.workers,
                collate_fn=collate,
                drop_last=len(ordered) > batch_size,
                pin_memory=self.device.startswith("cuda"),
                worker_init_fn=worker_init(),  # workers die with this process
            )
            bar = progress_bar(
                len(loader), desc=f"epoch {epoch}", unit="batch", enabled=self.progress, leave=False
            )
            self.model.train()
            losses, partial, dropped = [], False, 0
            try:
                for batch, idx, n_bad in loader:
                    dropped += n_bad
                    if batch is None or len(idx) < 2:
                        continue
                    rows = [ordered[i] for i in idx]
                    loss = self._step(rows, batch, lr_at(self.step, total_steps, lr))
                    if not math.isfinite(loss):
                        self._diverged(epoch, loss, lr)
                    losses.append(loss)
                    self.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}")
                    if deadline is not None and time.monotonic() >= deadline:
                        partial = True
                        break
            finally:
                bar.close()
        if dropped:
            log.warning("epoch %d: %d images could not be read and were skipped", epoch, dropped)
        return (float(np.mean(losses)) if losses else float("nan")), partial

    def _step(self, rows: list[Pair], batch: Any, lr: float) -> float:
        import torch

        for group in self.opt.param_groups:
            group["lr"] = lr
        unique, inverse = np.unique(np.array([p.text for p in rows], dtype=object),
                                    return_inverse=True)  # fmt: skip
        tokens = self.tokenizer(list(unique)).to(self.device)
        ids = torch.from_numpy(inverse.astype(np.int64)).to(self.device)
        grades = None
        if self.grades is not None:
            grades = torch.tensor([self.grades[p.image_pk] for p in rows], device=self.device)
        if self._channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with autocast(self.precision, self.device):
            image = self.model.encode_image(
                batch.to(self.device, non_blocking=True), normalize=True
            )
            text = self.model.encode_text(tokens, normalize=True)[ids]
        # the loss in float32: bf16 logits (scale 10) would round the targets' margins
        self.loss_fn.targets = pair_targets(ids, grades, self.neighbour)
        scale = self.head.log_scale.clamp(max=math.log(100)).exp()
        loss = self.loss_fn(image.float(), text.float(), scale, self.head.bias)
        if not torch.isfinite(loss):
            return float(loss.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for g in self.opt.param_groups for p in g["params"]], max_norm=1.0
        )
        self.opt.step()
        return float(loss.detach())

    def _diverged(self, epoch: int, loss: float, lr: float) -> None:
        kept = (
            f"the last good checkpoint {self.out / MODEL_FILE} (epoch {self.best_epoch},"
            f" held-out P@{self.k} {self.best:.3f}) is kept"
            if self.sha
            else "no checkpoint had been written yet"
        )
        state = (
            f"; re-run with the same --out and a lower --lr to resume after epoch {self.epoch}"
            if self.epoch
            else "; re-run with a lower --lr"
        )
        raise CasebaseError(
            f"training diverged: the loss is {loss} at epoch {epoch}, step "
            f"{self.step + 1} (--lr {lr:g}); {kept}{state}"
        )

    # ------------------------------------------------------------------ held-out P@k
    def _held_out_batches(self, held: list[Pair], transform: Any):
        """The held-out images as the ingest transform makes them; kept in memory after
        the first pass when they fit (they are the same every epoch)."""
        if self._held_tensors is not None:
            return self._held_tensors
        from torch.utils.data import DataLoader

        loader: Any = DataLoader(
            PairImages([p.uri for p in held], transform),  # type: ignore[arg-type]
            batch_size=256,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            worker_init_fn=worker_init(),
        )
        batches, size = [], 0
        for batch, idx, _ in loader:
            if batch is not None:
                batches.append((batch, idx))
                size += batch.numel() * batch.element_size()
        if size <= HELD_OUT_CACHE_BYTES:
            self._held_tensors = batches
        return batches

    def held_out_precision(self, held: list[Pair], transform: Any, epoch: int = 0) -> float:
        import torch

        self.model.eval()
        vectors, kept = [], []
        with torch.inference_mode():
            for batch, idx in self._held_out_batches(held, transform):
                v = embed_images(self.model, batch.to(self.device), self.start.config.tta)
                vectors.append(v.float().cpu().numpy())
                kept.extend(idx)
        self.model.train()
        vecs = np.concatenate(vectors) if vectors else np.empty((0, 1), np.float32)
        if not np.all(np.isfinite(vecs)):
            self._diverged(epoch, float("nan"), self.opt.param_groups[0]["lr"])
        rows = [held[i] for i in kept]
        return precision_at_k(
            vecs,
            [p.labels for p in rows],
            [p.group for p in rows],
            [p.modality for p in rows],
            self.k,
            seed=self.seed,
        )

    # ------------------------------------------------------------------ bookkeeping
    def finish_epoch(
        self,
        epoch: int,
        loss: float,
        precision: float,
        partial: bool,
        seconds: float,
        cpu_seconds: float,
        provenance: dict[str, Any],
    ) -> dict[str, Any]:
        record = {
            "epoch": epoch,
            "loss": round(loss, 6),
            "precision": round(precision, 6),
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1),
            "partial": partial,
        }
        self.history.append(record)
        self.epoch = epoch
        if precision > self.best:
            self.best, self.best_epoch, self.stale = precision, epoch, 0
            _, self.sha = write_checkpoint(
                self.out, self.model, self.start.config, {**provenance, **self.provenance()}
            )
        else:
            self.stale += 1
        log.info(
            "epoch %d: loss %.4f, held-out P@%d %.3f (best %.3f at epoch %d)",
            epoch,
            loss,
            self.k,
            precision,
            self.best,
            self.best_epoch,
        )
        ck.save_state(
            self.out,
            {
                "fingerprint": self.fingerprint,
                "epoch": self.epoch,
                "step": self.step,
                "stale": self.stale,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "baseline": self.baseline,
                "sha256": self.sha,
                "history": self.history,
                "model": {n: t.detach().cpu() for n, t in self.model.state_dict().items()},
                "head": self.head.state_dict(),
                "optimizer": self.opt.state_dict(),
            },
        )
        return {**record, "best": round(self.best, 6), "best_epoch": self.best_epoch}
