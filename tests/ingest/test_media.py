"""Media paths are read only inside the media root (``ingest.media``)."""

from __future__ import annotations

import os

import pytest

from ingest.media import MediaError, read_media


@pytest.fixture()
def root(tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "sub" / "a.jpg").write_bytes(b"x" * 10)
    (media / "empty.jpg").write_bytes(b"")
    (tmp_path / "secret.jpg").write_bytes(b"s" * 10)
    os.symlink(tmp_path / "secret.jpg", media / "out.jpg")
    os.symlink(media / "sub" / "a.jpg", media / "in.jpg")
    os.symlink(media / "loop.jpg", media / "loop.jpg")
    os.mkfifo(media / "fifo.jpg")
    return media.resolve()


@pytest.mark.parametrize(
    "rel, reason",
    [
        ("../secret.jpg", "outside_root"),
        ("sub/../../secret.jpg", "outside_root"),
        ("out.jpg", "outside_root"),  # a symlink out
        ("/etc/passwd", "outside_root"),
        ("nope.jpg", "missing_media"),
        ("sub", "not_a_file"),
        ("fifo.jpg", "not_a_file"),
        ("empty.jpg", "empty_file"),
        ("loop.jpg", "symlink_loop"),
        ("", "bad_media_path"),
        ("a\x00b", "bad_media_path"),
    ],
)
def test_refused_paths_name_their_reason(root, rel, reason):
    with pytest.raises(MediaError) as e:
        read_media(root, rel, 1000)
    assert e.value.reason == reason


def test_files_inside_are_read_links_inside_too_and_size_is_capped(root):
    assert read_media(root, "sub/a.jpg", 1000) == b"x" * 10
    assert read_media(root, "in.jpg", 1000) == b"x" * 10
    assert read_media(root, str(root / "sub" / "a.jpg"), 1000) == b"x" * 10  # absolute, inside
    with pytest.raises(MediaError, match="file_too_large"):
        read_media(root, "sub/a.jpg", 5)
