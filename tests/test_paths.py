"""Image paths stay inside their root (imaging/paths.py): ``..``, absolute paths and
symlinks that lead out are refused before anything outside is looked at, with the same
reason whether the outside file exists or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casebase.errors import InputError
from casebase.imaging.paths import OutsideRootError, confine


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    """root/ (images: a.png, sub/b.png, links) beside outside/ (secret.jpg)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.png").write_bytes(b"a")
    (root / "sub" / "b.png").write_bytes(b"b")
    (outside / "secret.jpg").write_bytes(b"secret")
    (root / "link_in.png").symlink_to("sub/b.png")
    (root / "sub" / "up.png").symlink_to("../a.png")
    (root / "abs_in.png").symlink_to(root / "a.png")
    (root / "link_out.jpg").symlink_to("../outside/secret.jpg")
    (root / "link_missing.jpg").symlink_to("../outside/missing.jpg")
    (root / "abs_out.jpg").symlink_to(outside / "secret.jpg")
    (root / "dir_out").symlink_to(outside)
    (root / "sub" / "escape").symlink_to("../../outside")
    (root / "loop").symlink_to("loop")
    return {"root": root, "outside": outside}


@pytest.mark.parametrize(
    "path, expected",
    [
        ("a.png", "a.png"),
        ("./a.png", "a.png"),
        ("sub/../a.png", "a.png"),
        ("sub/b.png", "sub/b.png"),
        ("link_in.png", "sub/b.png"),
        ("sub/up.png", "a.png"),
        ("abs_in.png", "a.png"),
        ("missing/x.png", "missing/x.png"),
        ("missing/../a.png", "a.png"),
    ],
)
def test_paths_inside_resolve_to_their_file(tree, path: str, expected: str) -> None:
    root = tree["root"]
    got = confine(root, path)
    assert got == Path(os.path.realpath(root)) / expected, got
    assert not any(p.is_symlink() for p in [got, *got.parents]), got


def test_absolute_path_inside_the_root_is_fine(tree) -> None:
    root = tree["root"]
    assert confine(root, str(root / "sub" / "b.png")) == root / "sub" / "b.png"


OUTSIDE = [
    "../outside/secret.jpg",
    "../outside/missing.jpg",
    "sub/../../outside/secret.jpg",
    "link_out.jpg",
    "link_missing.jpg",
    "abs_out.jpg",
    "dir_out/secret.jpg",
    "dir_out/missing.jpg",
    "sub/escape/secret.jpg",
    "/etc/passwd",
    "/etc/no-such-file",
    "{outside}/secret.jpg",
    "{root}/../outside/secret.jpg",
]


@pytest.mark.parametrize("path", OUTSIDE)
def test_paths_leading_out_are_refused_alike(tree, path: str) -> None:
    root = tree["root"]
    path = path.format(root=root, outside=tree["outside"])
    with pytest.raises(OutsideRootError) as info:
        confine(root, path)
    # One message for every case: existing or missing, direct or through a link.
    assert str(info.value) == f"image_path leads outside the images root {root}"


def test_nothing_outside_the_root_is_looked_at(tree, monkeypatch) -> None:
    """The decision is made before any lstat/readlink of a path outside the root."""
    root, outside = tree["root"], tree["outside"]
    seen: list[str] = []
    real_lstat, real_readlink = os.lstat, os.readlink

    def lstat(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return real_lstat(path, *args, **kwargs)

    def readlink(path, *args, **kwargs):
        seen.append(os.fspath(path))
        return real_readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "readlink", readlink)
    for path in OUTSIDE:
        with pytest.raises(OutsideRootError):
            confine(root, path.format(root=root, outside=outside))
    touched = [p for p in seen if p.startswith(str(outside)) or p.startswith("/etc")]
    assert touched == [], touched


def test_a_symlink_loop_is_an_error_not_a_hang(tree) -> None:
    with pytest.raises(InputError, match="too many levels of symbolic links"):
        confine(tree["root"], "loop")
