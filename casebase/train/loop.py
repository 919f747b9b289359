"""`casebase train`: contrastive fine-tuning of a space's model on its own image–text pairs.

The loss is open_clip's ``SigLipLoss`` with same-text pairs as positives (see
``casebase.train.loss`` for why).

The run: a held-out split by patient (``data.split_by_patient``); after every
epoch, exact kNN precision@k on the held-out images (``data.precision_at_k``);
the best epoch is the checkpoint (``casebase.embedding.checkpoint.write_checkpoint``), early
stopping after ``patience`` epochs without improvement, a wall-clock budget
(``max_minutes``), ``out/last.pt`` after every epoch so a re-run resumes, and
a non-finite loss stops the run with the last good checkpoint kept.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from casebase.embedding.checkpoint import MODEL_FILE, write_checkpoint, write_config
from casebase.embedding.precision import autocast, check_precision
from casebase.embedding.workers import worker_init
from casebase.errors import CasebaseError, InputError
from casebase.progress import progress_bar
from casebase.train import checkpoint as ck
from casebase.train.data import (
    Pair,
    PairImages,
    TextSource,
    collate,
    load_pairs,
    precision_at_k,
    split_by_patient,
)
from casebase.train.loss import same_text_prior, shared_text_siglip_loss, siglip_head

log = logging.getLogger(__name__)

MAX_HELD_OUT = 20_000  # held-out images embedded per epoch, at most (seeded sample)


@dataclass(frozen=True)
class TrainResult:
    out: str
    checkpoint: str | None
    sha256: str | None
    space: str
    base: str
    text: str
    random_init: bool
    n_train: int
    n_held_out: int
    k: int
    baseline_precision: float
    best_epoch: int
    best_precision: float
    epochs_done: int
    resumed_from: int  # 0: a fresh run
    stopped: str  # "epochs", "early stopping", "time budget", "already done"
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        where = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        lines = [
            f"trained {self.base} on space {self.space} (text {self.text}): {self.n_train} train"
            f" / {self.n_held_out} held-out images; {self.epochs_done} epochs{where}, stopped by"
            f" {self.stopped}, {self.seconds:.0f} s",
            f"held-out P@{self.k}: {self.baseline_precision:.3f} before training, "
            f"{self.best_precision:.3f} at the best epoch ({self.best_epoch})",
        ]
        for h in self.history:
            lines.append(
                f"  epoch {h['epoch']:>3}  loss {h['loss']:.4f}  P@{self.k} "
                f"{h['precision']:.3f}" + ("  (partial)" if h.get("partial") else "")
            )
        if self.checkpoint:
            lines.append(f"checkpoint: {self.checkpoint} (sha256 {str(self.sha256)[:12]}…)")
            lines.append(f"register it: casebase spaces add --checkpoint {self.checkpoint}")
        return "\n".join(lines)


def _lr_at(step: int, total: int, lr: float) -> float:
    """Linear warm-up (10 %, at most 1000 steps), then cosine decay to 0."""
    warm = max(1, min(1000, total // 10))
    if step < warm:
        return lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def _transforms(model: Any):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from casebase.embedding import Preprocess

    pp = model.visual.preprocess_cfg
    cfg = PreprocessCfg(**{k: pp[k] for k in PreprocessCfg.__dataclass_fields__ if k in pp})
    return (
        Preprocess(image_transform_v2(cfg, is_train=True)),
        Preprocess(image_transform_v2(cfg, is_train=False)),
    )


def _device(device: str | None) -> str:
    import torch

    from casebase.config import load_settings

    device = device or load_settings().device
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA GPU: use cpu")
    return device


def _precision(precision: str | None, device: str) -> str:
    """The steps' autocast: unless asked, bf16 on a GPU that has it, else fp32. fp16 would
    need loss scaling (its gradients underflow), which this loop does not do."""
    import torch

    if precision == "fp16":
        raise InputError(
            "training in fp16 needs loss scaling, which casebase does not do: use bf16"
        )
    if precision is None:
        cuda = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda else "fp32"
    return check_precision(precision, device)


def train(
    conn,
    *,
    space: str | None = None,
    base: str | None = None,
    pretrained: str | None = None,
    text: str = "report",
    epochs: int = 10,
    out: str | Path,
    device: str | None = None,
    batch_size: int = 64,
    precision: str | None = None,
    lr: float = 1e-4,
    weight_decay: float = 0.1,
    seed: int = 0,
    patience: int = 3,
    max_minutes: float | None = None,
    holdout: float = 0.15,
    k: int = 5,
    workers: int | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Fine-tune ``base`` (default: the space's own model) on the space's pairs.

    Resumes from ``out/last.pt`` when it exists (same space, text, base, seed and
    held-out share; ``epochs``, ``lr`` and the budget may change). Raises
    ``CasebaseError`` when the loss stops being finite, keeping the last good
    checkpoint and state.
    """
    import torch

    from casebase.db.spaces import get_space

    started = time.monotonic()
    deadline = started + max_minutes * 60 if max_minutes else None
    if epochs < 1 or batch_size < 2 or lr <= 0 or k < 1 or patience < 1:
        raise InputError("need epochs >= 1, batch_size >= 2, lr > 0, k >= 1, patience >= 1")
    out = Path(out)
    source = TextSource.parse(text)
    sp = get_space(conn, space)
    pairs = load_pairs(conn, sp, source)
    conn.commit()
    if len(pairs) < 20:
        raise InputError(
            f"space {sp.name} has {len(pairs)} images with a {source} text; "
            "training needs at least 20"
        )
    train_pairs, held = split_by_patient(pairs, holdout, seed)
    if len(held) > MAX_HELD_OUT:
        pick = np.random.default_rng(seed).choice(len(held), MAX_HELD_OUT, replace=False)
        held = [held[i] for i in sorted(pick)]
    if len(held) <= k:
        raise InputError(
            f"only {len(held)} held-out images: P@{k} needs more than {k}; "
            "raise --holdout or load more studies"
        )

    start = ck.load_base(base, sp, pretrained=pretrained, seed=seed)
    if start.random_init:
        log.warning(
            "TRAINING FROM RANDOM INITIALISATION: %s has no pretrained weights. "
            "Fine on a narrow task with enough labels; otherwise use pretrained "
            "weights (--base clip-vit-b-32, biomedclip, ...)",
            start.name,
        )
    fingerprint = {
        "space": sp.name,
        "text": str(source),
        "base": start.name,
        "seed": seed,
        "holdout": holdout,
        "arch": json.dumps(start.config.model_cfg, sort_keys=True),
    }
    dev = _device(device)
    steps_precision = _precision(precision, dev)
    model = start.model.to(dev)
    head = siglip_head(same_text_prior([p.text for p in train_pairs], batch_size)).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and "logit_scale" not in n]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay + list(head.parameters()), "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    run = _Run(
        out=out,
        model=model,
        head=head,
        opt=opt,
        start=start,
        fingerprint=fingerprint,
        k=k,
        seed=seed,
        device=dev,
        precision=steps_precision,
        workers=workers,
        progress=progress,
    )
    saved = ck.load_state(out)
    if saved is not None:
        ck.check_resumable(out, saved, fingerprint)
        run.restore(saved)
    resumed_from = run.epoch
    provenance = {
        "base": start.name,
        "random_init": start.random_init,
        "space": sp.name,
        "text": str(source),
        "k": k,
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "precision": steps_precision,
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": seed,
            "holdout": holdout,
            "patience": patience,
            "max_minutes": max_minutes,
            "loss": "open_clip SigLipLoss, same text = positive",
            "n_train": len(train_pairs),
            "n_held_out": len(held),
        },
    }
    train_tf, eval_tf = _transforms(model)
    if run.baseline is None:
        run.baseline = run.held_out_precision(held, eval_tf)
        log.info("held-out P@%d before training: %.3f", k, run.baseline)

    stopped = "epochs"
    if run.stale >= patience:
        stopped = "early stopping"
    elif run.epoch >= epochs:
        stopped = "already done"
    steps_per_epoch = max(1, len(train_pairs) // batch_size)
    while stopped == "epochs" and run.epoch < epochs:
        epoch = run.epoch + 1
        loss, partial = run.train_epoch(
            epoch,
            train_pairs,
            train_tf,
            batch_size=batch_size,
            lr=lr,
            total_steps=epochs * steps_per_epoch,
            deadline=deadline,
        )
        p_at_k = run.held_out_precision(held, eval_tf, epoch=epoch)
        run.finish_epoch(epoch, loss, p_at_k, partial, time.monotonic() - started, provenance)
        if run.stale >= patience:
            stopped = "early stopping"
        elif partial or (deadline is not None and time.monotonic() >= deadline):
            stopped = "time budget"
    if run.sha is not None:
        write_config(out, start.config, {**provenance, **run.provenance()}, run.sha)
    return TrainResult(
        out=str(out),
        checkpoint=str(out / MODEL_FILE) if run.sha else None,
        sha256=run.sha,
        space=sp.name,
        base=start.name,
        text=str(source),
        random_init=start.random_init,
        n_train=len(train_pairs),
        n_held_out=len(held),
        k=k,
        baseline_precision=run.baseline,
        best_epoch=run.best_epoch,
        best_precision=run.best,
        epochs_done=run.epoch,
        resumed_from=resumed_from,
        stopped=stopped,
        seconds=time.monotonic() - started,
        history=list(run.history),
    )


class _Run:
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
        precision: str,
        workers: int | None,
        progress: bool | None,
    ) -> None:
        import open_clip

        self.out, self.model, self.head, self.opt = out, model, head, opt
        self.start, self.fingerprint, self.k, self.seed = start, fingerprint, k, seed
        self.device, self.progress, self.precision = device, progress, precision
        self.workers = workers if workers is not None else (0 if device == "cpu" else 4)
        self.tokenizer = open_clip.get_tokenizer(start.arch)
        self.loss_fn = shared_text_siglip_loss()
        self.epoch, self.step, self.stale = 0, 0, 0
        self.best, self.best_epoch = -1.0, 0
        self.baseline: float | None = None
        self.sha: str | None = None
        self.history: list[dict[str, Any]] = []

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
        transform: Any,
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
            order = torch.randperm(
                len(pairs), generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            ).tolist()
            ordered = [pairs[i] for i in order]
            loader: Any = DataLoader(
                PairImages([p.uri for p in ordered], transform),  # type: ignore[arg-type]
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
                    loss = self._step(
                        [ordered[i].text for i in idx], batch, _lr_at(self.step, total_steps, lr)
                    )
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

    def _step(self, texts: list[str], batch: Any, lr: float) -> float:
        import torch

        for group in self.opt.param_groups:
            group["lr"] = lr
        unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        tokens = self.tokenizer(list(unique)).to(self.device)
        ids = torch.from_numpy(inverse.astype(np.int64)).to(self.device)
        with autocast(self.precision, self.device):
            image = self.model.encode_image(
                batch.to(self.device, non_blocking=True), normalize=True
            )
            text = self.model.encode_text(tokens, normalize=True)[ids]
            self.loss_fn.text_ids = ids
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
    def held_out_precision(self, held: list[Pair], transform: Any, epoch: int = 0) -> float:
        import torch
        from torch.utils.data import DataLoader

        loader: Any = DataLoader(
            PairImages([p.uri for p in held], transform),  # type: ignore[arg-type]
            batch_size=256,
            shuffle=False,
            num_workers=self.workers,
            collate_fn=collate,
            worker_init_fn=worker_init(),
        )
        self.model.eval()
        vectors, kept = [], []
        with torch.inference_mode():
            for batch, idx, _ in loader:
                if batch is None:
                    continue
                v = self.model.encode_image(batch.to(self.device), normalize=True)
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
        provenance: dict[str, Any],
    ) -> None:
        self.history.append(
            {
                "epoch": epoch,
                "loss": round(loss, 6),
                "precision": round(precision, 6),
                "seconds": round(seconds, 1),
                "partial": partial,
            }
        )
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
