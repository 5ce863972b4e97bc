"""effnet.io: a write either fully replaces the file or leaves the old one, never a half-written file."""

import os
import stat

import pytest

from effnet.io import atomic_output, is_temp_file, remove_stale_temp_files, write_atomic


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "sub" / "result.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # not mkstemp's private 0o600


def test_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_bad_targets_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="is a directory"), atomic_output(tmp_path):
        pass
    with pytest.raises(ValueError, match="does not exist"), atomic_output(tmp_path / "missing" / "x.bin"):
        pass


def test_stale_temp_files_are_recognised_and_removed(tmp_path):
    path = tmp_path / "w.safetensors"
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as tmp:
        stale = tmp.with_name(tmp.name)  # the name a SIGKILL would have left behind
        raise KeyboardInterrupt
    stale.write_bytes(b"half")
    keep = [tmp_path / n for n in ("w.safetensors.tmp", ".hidden", "notes.tmp", ".x.too-long-rnd.tmp")]
    for p in keep:
        p.write_bytes(b"mine")
    assert is_temp_file(stale) and not any(is_temp_file(p) for p in keep)
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert sorted(tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temp_files(tmp_path / "absent") == []
