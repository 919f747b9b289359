"""`casebase train`: contrastive fine-tuning of a space's model on its own image–text pairs.

The loss is open_clip's ``SigLipLoss`` with same-text pairs as positives (see
``casebase.train.loss`` for why), soft ordinal targets for graded labels.

The run: a held-out split by patient (``data.split_by_patient``); after every
epoch, exact kNN precision@k on the held-out images (``data.precision_at_k``);
the best epoch is the checkpoint (``casebase.embedding.checkpoint.write_checkpoint``), early
stopping after ``patience`` epochs without improvement, a wall-clock budget
(``max_minutes``), ``out/last.pt`` after every epoch so a re-run resumes, and
a non-finite loss stops the run with the last good checkpoint kept. What each epoch
does is :mod:`casebase.train.run`; the recipe's knobs (input size, augmentation,
balanced sampling, ordinal targets) are one :class:`Recipe`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from casebase.embedding.checkpoint import MODEL_FILE, write_config
from casebase.embedding.precision import check_precision
from casebase.embedding.presets import image_size
from casebase.errors import InputError
from casebase.train import checkpoint as ck
from casebase.train.augment import Augment, ImageCache, TrainTransform
from casebase.train.data import TextSource, grades_of, load_pairs, split_by_patient
from casebase.train.loss import same_text_prior, siglip_head
from casebase.train.run import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How the images are shown to the model (the knobs ``benchmarks/knee_kl.py`` tuned).

    ``image_size``: the input side of a random-init architecture (None: the base's own);
    ``augment``: :class:`~casebase.train.augment.Augment` (``Augment.off()`` for none;
    with ``hflip`` the checkpoint also embeds each film as the mean of it and its mirror);
    ``balanced``: every label equally often per epoch; ``ordinal``: the label is a grade,
    and a neighbouring grade is ``neighbour`` of a positive (:mod:`casebase.train.loss`).
    (bf16 steps on a CPU are ``train(precision="bf16")``, not part of the recipe.)
    """

    image_size: int | None = None
    augment: Augment = field(default_factory=Augment)
    balanced: bool = False
    ordinal: bool = False
    neighbour: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_flags(
        cls,
        *,
        image_size: int | None = None,
        ordinal: bool = False,
        hflip: bool = False,
        balanced: bool = False,
        augment: bool = True,
    ) -> Recipe:
        """The recipe of `casebase train`'s flags (--image-size, --ordinal, --hflip, ...)."""
        aug = Augment(hflip=hflip) if augment else Augment.off()
        if hflip and not augment:
            aug = Augment(**{**Augment.off().to_dict(), "hflip": True})
        return cls(image_size=image_size, augment=aug, balanced=balanced, ordinal=ordinal)


def epoch_line(record: dict[str, Any], k: int = 5) -> str:
    """One line of progress per epoch (what `casebase train` prints as it goes)."""
    part = " (partial: time budget)" if record.get("partial") else ""
    return (
        f"epoch {record['epoch']:>3}{part}: loss {record['loss']:.4f}, held-out P@{k} "
        f"{record['precision']:.3f} (best {record['best']:.3f} at epoch {record['best_epoch']}),"
        f" {record['seconds']:.0f} s, CPU {record.get('cpu_seconds', 0):.0f} s"
    )


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
    cpu_seconds: float = 0.0  # this process's CPU time (and its decode workers')
    recipe: dict[str, Any] = field(default_factory=dict)
    exclude_batches: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def render(self) -> str:
        where = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        lines = [
            f"trained {self.base} on space {self.space} (text {self.text}): {self.n_train} train"
            f" / {self.n_held_out} held-out images; {self.epochs_done} epochs{where}, stopped by"
            f" {self.stopped}, {self.seconds:.0f} s (CPU {self.cpu_seconds:.0f} s)",
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


#: What ``train`` uses for the options left as None. Fine-tuning weights wants a small
#: learning rate and stops early; a random-init model (small-resnet) learns from scratch
#: at 10x the rate and needs more epochs, and its held-out P@5 on a few hundred images
#: is noisy enough that 3 epochs without a new best are no sign it has stopped learning.
DEFAULTS: dict[str, dict[str, Any]] = {
    "fine-tune": {"epochs": 10, "lr": 1e-4, "weight_decay": 0.1, "patience": 3},
    "random-init": {"epochs": 30, "lr": 1e-3, "weight_decay": 0.05, "patience": 10},
}


def _check(**values: Any) -> None:
    """Refuse impossible options before anything is loaded."""
    rules = {
        "epochs": (lambda v: v >= 1, "epochs >= 1"),
        "batch_size": (lambda v: v >= 2, "batch_size >= 2"),
        "lr": (lambda v: v > 0, "lr > 0"),
        "weight_decay": (lambda v: v >= 0, "weight_decay >= 0"),
        "k": (lambda v: v >= 1, "k >= 1"),
        "patience": (lambda v: v >= 1, "patience >= 1"),
    }
    bad = [rules[n][1] for n, v in values.items() if v is not None and not rules[n][0](v)]
    if bad:
        raise InputError(f"need {', '.join(bad)}")


def _eval_transform(model: Any) -> Any:
    """The transform ingest embeds with (``load_encoder``'s): training ends in it too."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from casebase.embedding import Preprocess

    pp = model.visual.preprocess_cfg
    cfg = PreprocessCfg(**{k: pp[k] for k in PreprocessCfg.__dataclass_fields__ if k in pp})
    return Preprocess(image_transform_v2(cfg, is_train=False))


def _cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


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
    epochs: int | None = None,
    out: str | Path,
    device: str | None = None,
    batch_size: int = 64,
    precision: str | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    seed: int = 0,
    patience: int | None = None,
    max_minutes: float | None = None,
    holdout: float = 0.15,
    k: int = 5,
    workers: int | None = None,
    progress: bool | None = None,
    recipe: Recipe | None = None,
    exclude_batches: Sequence[str] = (),
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Fine-tune ``base`` (default: the space's own model) on the space's pairs.

    ``base`` may also name a random-init architecture (``small-resnet``, ``small-vit``)
    or a ``.json`` open_clip config. ``epochs``, ``lr``, ``weight_decay`` and
    ``patience`` left as None take :data:`DEFAULTS` for fine-tuning weights or for
    training from random initialisation. ``exclude_batches``: ingest batches left out of
    training (and of its held-out split), to evaluate on later with `casebase eval
    --batch`. ``on_epoch`` is called with each epoch's record (epoch, loss, held-out
    precision, best so far, seconds). Resumes from ``out/last.pt`` when it exists (same
    space, text, base, seed, held-out share, batch size, recipe and batches; ``epochs``,
    ``lr``, patience and the budget may change). Raises ``CasebaseError`` when the loss
    stops being finite, keeping the last good checkpoint and state.
    """
    import torch

    from casebase.db.spaces import get_space

    recipe = recipe or Recipe()
    started, cpu_started = time.monotonic(), _cpu_seconds()
    deadline = started + max_minutes * 60 if max_minutes else None
    given: dict[str, Any] = {
        "epochs": epochs,
        "lr": lr,
        "weight_decay": weight_decay,
        "patience": patience,
    }
    _check(batch_size=batch_size, k=k, **given)
    out = Path(out)
    source = TextSource.parse(text)
    sp = get_space(conn, space)
    exclude_batches = tuple(dict.fromkeys(exclude_batches))
    pairs = load_pairs(conn, sp, source, exclude_batches=exclude_batches)
    conn.commit()
    if len(pairs) < 20:
        left_out = f" outside batch {', '.join(exclude_batches)}" if exclude_batches else ""
        raise InputError(
            f"space {sp.name} has {len(pairs)} images{left_out} with a {source} text; "
            "training needs at least 20"
        )
    if recipe.ordinal and source.kind != "label":
        raise InputError("--ordinal needs a graded label column: --text label:COLUMN")
    grades = None
    if recipe.ordinal:
        grades = dict(zip((p.image_pk for p in pairs), grades_of(pairs), strict=True))
    train_pairs, held = split_by_patient(pairs, holdout, seed)
    if len(held) > MAX_HELD_OUT:
        pick = np.random.default_rng(seed).choice(len(held), MAX_HELD_OUT, replace=False)
        held = [held[i] for i in sorted(pick)]
    if len(held) <= k:
        raise InputError(
            f"only {len(held)} held-out images: P@{k} needs more than {k}; "
            "raise --holdout or load more studies"
        )

    start = ck.load_base(base, sp, pretrained=pretrained, seed=seed, image_size=recipe.image_size)
    defaults = DEFAULTS["random-init" if start.random_init else "fine-tune"]
    given = {name: defaults[name] if v is None else v for name, v in given.items()}
    epochs, lr, weight_decay, patience = (given[n] for n in defaults)
    if recipe.augment.hflip:  # trained on mirror images: embed as the mean of both
        start = replace(start, config=replace(start.config, tta="hflip"))
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
        # the batch is part of the objective (same-text positives per batch, the head's
        # prior): another batch size is another run, not a continuation of this one
        "batch_size": batch_size,
        "arch": json.dumps(start.config.model_cfg, sort_keys=True),
        "recipe": json.dumps(recipe.to_dict(), sort_keys=True),
        "exclude_batches": list(exclude_batches),
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

    run = Run(
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
        balanced=recipe.balanced,
        grades=grades,
        neighbour=recipe.neighbour,
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
            "loss": "open_clip SigLipLoss, same text = positive"
            + (f", grades 1 apart = {recipe.neighbour:g}" if recipe.ordinal else ""),
            "recipe": recipe.to_dict(),
            "exclude_batches": list(exclude_batches),
            "n_train": len(train_pairs),
            "n_held_out": len(held),
        },
    }
    eval_tf = _eval_transform(model)
    side = image_size(model.visual.preprocess_cfg["size"])
    load = TrainTransform(recipe.augment, eval_tf, ImageCache(2 * side))
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
            load,
            batch_size=batch_size,
            lr=lr,
            total_steps=epochs * steps_per_epoch,
            deadline=deadline,
        )
        p_at_k = run.held_out_precision(held, eval_tf, epoch=epoch)
        record = run.finish_epoch(
            epoch,
            loss,
            p_at_k,
            partial,
            time.monotonic() - started,
            _cpu_seconds() - cpu_started,
            provenance,
        )
        if on_epoch is not None:
            on_epoch(record)
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
        cpu_seconds=_cpu_seconds() - cpu_started,
        recipe=recipe.to_dict(),
        exclude_batches=exclude_batches,
    )
