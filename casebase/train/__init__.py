"""Raising retrieval quality: fine-tune a space's model, register it, back-fill it.

- ``loop.train``: contrastive fine-tuning on a space's image–text pairs
  (`casebase train`), writing a checkpoint that ``casebase.embedding`` loads;
- ``spaces.add_checkpoint_space`` / ``spaces.drop_space``: a checkpoint becomes
  a space of its own; an old space goes once another is the default
  (`casebase spaces`);
- ``reembed.reembed``: back-fill the new space with the images of the old one,
  optionally with label fusion (`casebase reembed`).

torch and open_clip are imported inside the functions that need them.
"""

from casebase.train.loop import TrainResult, train
from casebase.train.reembed import ReembedSummary, reembed
from casebase.train.spaces import add_checkpoint_space, drop_space

__all__ = [
    "ReembedSummary",
    "TrainResult",
    "add_checkpoint_space",
    "drop_space",
    "reembed",
    "train",
]
