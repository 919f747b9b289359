"""open_clip image/text encoders shared by ingest, retrieval and training.

The package, by job:

- :mod:`~casebase.embedding.encoder`: ``Encoder``, ``SpaceSpec``, ``load_encoder``;
- :mod:`~casebase.embedding.stream`: batched embedding with decode worker processes;
- :mod:`~casebase.embedding.workers`: how many workers, their priority, their death;
- :mod:`~casebase.embedding.presets`: the named models, as data;
- :mod:`~casebase.embedding.weights`: weight files (Hugging Face cache first, checksums);
- :mod:`~casebase.embedding.checkpoint`: local checkpoints, read and written;
- :mod:`~casebase.embedding.build`: the open_clip model for each kind of model id;
- :mod:`~casebase.embedding.messages`: fixes to suggest, exceptions as one line.

It imports only ``imaging``, ``db``, ``config`` and ``errors`` of casebase, and never
torch or open_clip at import time (``tests/test_layers.py`` checks both).
"""

from casebase.embedding.encoder import Encoder, Preprocess, SpaceSpec, load_encoder
from casebase.embedding.presets import PRESETS, Preset
from casebase.embedding.workers import default_workers

__all__ = [
    "PRESETS",
    "Encoder",
    "Preprocess",
    "Preset",
    "SpaceSpec",
    "default_workers",
    "load_encoder",
]
