"""A second embedding space for tests of two-stage retrieval: a real open_clip checkpoint
(tiny-random's weights, perturbed with seeded noise, so its neighbours differ), registered
with ``add_checkpoint_space`` and back-filled from tiny-random with ``reembed``. Images
whose file cannot be read (the ``extra://`` rows of tests/filter_cases.py) stay out of
it: a back-fill in progress."""

from __future__ import annotations

from pathlib import Path


def random_checkpoint(out: Path, seed: int) -> Path:
    """Write ``out/model.pt`` + ``model.json``: tiny-random with its weights perturbed."""
    import torch

    from casebase.embedding import load_encoder
    from casebase.embedding.checkpoint import model_config, write_checkpoint

    encoder = load_encoder("tiny-random", device="cpu")
    model = encoder.model
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=generator) * (p.std() + 1e-3))
    path, _ = write_checkpoint(
        out, model, model_config(model, encoder.arch), {"base": "tiny-random (perturbed)"}
    )
    return path


def add_second_space(url: str, out: Path, *, name: str = "second", seed: int = 7) -> int:
    """Register and back-fill the perturbed model as space ``name``; return how many
    images it could not read (left out of it)."""
    from casebase.db.connection import connect
    from casebase.train import add_checkpoint_space, reembed

    checkpoint = random_checkpoint(out, seed)
    with connect(url) as conn:
        add_checkpoint_space(conn, checkpoint, name=name)
        summary = reembed(conn, source="tiny-random", target=name, progress=False, workers=0)
        conn.execute("ANALYZE casebase.embedding")
        conn.commit()
    return summary.failed
