"""The one atomic-write helper: a failed write keeps the old file and leaves no temporary."""
import json
import os
import stat

import pytest

from taichi_nerf.atomic import atomic_file, atomic_write_json


def test_write_replaces_the_target_and_leaves_only_it(tmp_path):
    f = tmp_path / "a.json"
    f.write_text("old")
    atomic_write_json(f, {"x": [1, 2]}, indent=1)
    assert json.loads(f.read_text()) == {"x": [1, 2]} and f.read_text().endswith("\n")
    with atomic_file(f, "wb") as fh:
        fh.write(b"\x00\x01")
    assert f.read_bytes() == b"\x00\x01"
    assert sorted(os.listdir(tmp_path)) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(f, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("interrupted")
    with pytest.raises(TypeError):
        atomic_write_json(f, {"x": object()})
    assert f.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_missing_folder_is_an_oserror(tmp_path):
    with pytest.raises(OSError):
        atomic_write_json(tmp_path / "nowhere" / "a.json", {})


def test_permissions_follow_the_umask(tmp_path):
    # a plain open() makes 0666 & ~umask; a temporary file would otherwise stay 0600
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_text_mode_is_utf8(tmp_path):
    with atomic_file(tmp_path / "a.txt", "w") as fh:
        fh.write("π\n")
    assert (tmp_path / "a.txt").read_bytes() == "π\n".encode("utf-8")
