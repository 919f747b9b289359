"""Keeping image paths inside their root: a manifest names files, it cannot reach out.

A manifest (or a DICOM folder) comes from outside the trust boundary. Its ``image_path``
may say ``../outside/secret.jpg``, ``/etc/passwd``, or name a symlink that points out of
the images root; before this module, each of them loaded a file from anywhere the
ingest job could read, and the reject reason for a non-image ("looks like a text file")
told the manifest author that the outside file exists.

:func:`confine` resolves a path below a root the way the kernel would (``..`` and
symlinks, component by component) but never looks at anything outside the root: it
checks each step lexically *before* touching the file system, and a step that would
leave the root is refused on the spot. So the refusal is the same for an outside file
that exists and one that does not, and no ``open``/``stat`` of the outside target
happens. Inside the root, a symlink to another file inside the root is fine.

The resolved path has no symlink left in it; ingest opens that path, so a link swapped
after the check cannot redirect the read (only someone who can write inside the root
could replace a directory with a link, and they can put any file there anyway).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from casebase.errors import InputError

__all__ = ["OutsideRootError", "confine", "is_inside"]

_MAX_LINKS = 40  # as Linux's MAXSYMLINKS


class OutsideRootError(InputError):
    """A path leads outside its root. The message never says whether the target exists."""


def is_inside(path: str, root: str) -> bool:
    """Lexically: ``path`` is ``root`` or below it (both absolute and normalised)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _below(path: str, roots: tuple[str, ...]) -> list[str] | None:
    """The components of absolute ``path`` below the first of ``roots`` it starts with
    (as written: ``..`` is resolved later, step by step), or None when it starts with none.
    """
    for root in roots:
        if is_inside(path, root):
            return [p for p in path[len(root) :].split(os.sep) if p]
    return None


def confine(root: str | Path, path: str | Path, *, what: str = "image_path") -> Path:
    """``path`` (relative to ``root``, or absolute) resolved inside ``root``.

    ``root`` is the operator's choice, not the manifest's: it is resolved with
    :func:`os.path.realpath`, and an absolute path may start with it as given or as
    resolved. Components that do not exist are kept as written (the caller's "file not
    found" is then about a path inside the root). Raises :class:`OutsideRootError` when
    ``..``, an absolute path or a symlink leads out, before looking at where it leads.
    """
    real_root = os.path.realpath(root)
    roots = (real_root, os.path.abspath(root))
    outside = OutsideRootError(f"{what} leads outside the images root {real_root}")
    text = os.fspath(path)
    if os.path.isabs(text):
        below = _below(text, roots)
        if below is None:
            raise outside
        pending = below
    else:
        pending = [p for p in text.split(os.sep) if p]
    current = real_root
    links = 0
    exists = True  # once a component is missing, the rest cannot be links
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            if current == real_root:
                raise outside
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if not exists:
            current = candidate
            continue
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:  # missing, not a directory, no permission: not a link we follow
            exists = False
            current = candidate
            continue
        if not stat.S_ISLNK(mode):
            current = candidate
            continue
        links += 1
        if links > _MAX_LINKS:
            raise InputError(f"{what} has too many levels of symbolic links")
        target = os.readlink(candidate)
        if os.path.isabs(target):
            below = _below(target, roots)
            if below is None:
                raise outside
            current, target_parts = real_root, below
        else:
            target_parts = [p for p in target.split(os.sep) if p]
        pending[:0] = target_parts
    return Path(current)
