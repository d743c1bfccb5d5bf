"""Hostile folder pools through the real ``vl3data curate``: one run over every kind of bad
file, then one test per kind (its ledger row: status and reason), plus the run-wide promises
(no traceback, one row per input, nothing written outside the output, no connection off
loopback)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from curation.sources.folder import SIDECAR_MAX_BYTES
from tests.hostile.harness import (
    assert_clean_exit,
    assert_nothing_else_touched,
    assert_only_loopback,
    run_curate,
)
from tests.hostile.media import image_cases, small
from vl3data.sample_media import jpeg_bytes

# real CLI runs over a whole corpus: `make test-slow` (and CI) runs them; `make test` stays
# under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

MAX_FILE = 3_000_000
GOOD = "good"  # placeholder: replaced by a good JPEG when the pool is written


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


# case -> (what to write: {relative path: bytes | callable(path, ctx)}, {key: (status, reason)})
# A key of None: the case must leave no row at all under that prefix.
def _folder_cases(ctx: dict) -> dict[str, tuple[dict, dict]]:
    good = ctx["good"]
    outside = ctx["outside"]
    cases: dict[str, tuple[dict, dict]] = {}
    for name, (data, status, reason) in image_cases(ctx["photo"]).items():
        cases[name.rsplit(".", 1)[0]] = ({f"img/{name}": data}, {f"img/{name}": (status, reason)})

    def link(target):
        return lambda p, c: os.symlink(target, p)

    more = {
        "file_too_large": (
            {"fs/big.jpg": good + b"\x00" * (MAX_FILE + 1)},
            {"fs/big.jpg": ("error", "file_too_large")},
        ),
        "sparse_10gb": (
            {"fs/sparse.jpg": lambda p, c: os.truncate(_touch(p), 10 * 2**30)},
            {"fs/sparse.jpg": ("error", "file_too_large")},
        ),
        "symlink_out_of_root": (
            {"fs/out.jpg": link(outside / "secret.jpg")},
            {"fs/out.jpg": ("error", "outside_root")},
        ),
        "symlink_to_dev_zero": (
            {"fs/devzero.jpg": link("/dev/zero")},
            {"fs/devzero.jpg": ("error", "outside_root")},
        ),
        "symlink_inside": (
            {"fs/inside_target.jpg": good, "fs/inside.jpg": link("inside_target.jpg")},
            {"fs/inside_target.jpg": ("kept", None), "fs/inside.jpg": ("kept", None)},
        ),
        "hardlink": (
            {
                "fs/hard_a.jpg": good,
                "fs/hard_b.jpg": lambda p, c: os.link(p.parent / "hard_a.jpg", p),
            },
            {"fs/hard_a.jpg": ("kept", None), "fs/hard_b.jpg": ("kept", None)},
        ),
        "dangling_symlink": (
            {"fs/dangling.jpg": link("nowhere.jpg")},
            {"fs/dangling.jpg": ("error", "read_error:FileNotFoundError")},
        ),
        "symlink_self_loop": (
            {"fs/self.jpg": link("self.jpg")},
            {"fs/self.jpg": ("error", "symlink_loop")},
        ),
        "symlink_two_loop": (
            {"fs/loop_a.jpg": link("loop_b.jpg"), "fs/loop_b.jpg": link("loop_a.jpg")},
            {
                "fs/loop_a.jpg": ("error", "symlink_loop"),
                "fs/loop_b.jpg": ("error", "symlink_loop"),
            },
        ),
        "symlinked_dir_out_of_root": (
            {"fs/linked_dir": link(outside)},
            {"fs/linked_dir/": None},
        ),
        "fifo": ({"fs/fifo.jpg": lambda p, c: _fifo(p)}, {"fs/fifo.jpg": ("error", "not_a_file")}),
        "folder_named_jpg": (
            {"fs/dir.jpg/inner.jpg": good},
            {"fs/dir.jpg/inner.jpg": ("kept", None), "fs/dir.jpg": None},
        ),
        "not_an_image_extension": (
            {"fs/readme.md": b"# hi", "fs/x.jpg.bak": good},
            {"fs/readme.md": None, "fs/x.jpg.bak": None},
        ),
        "non_utf8_name": (
            {"fs/caf\udce9.jpg": good, "fs/caf\udce9.txt": b"a caf\xe9"},
            {"fs/caf\\xe9.jpg": ("kept", None)},
        ),
        "newline_in_name": ({"fs/new\nline .jpg": good}, {"fs/new\nline .jpg": ("kept", None)}),
        "dot_only_name": ({"fs/dot/.jpg": good}, {"fs/dot/.jpg": ("kept", None)}),
        "deeply_nested": (
            {"fs/" + "d/" * 40 + "deep.jpg": good},
            {"fs/" + "d/" * 40 + "deep.jpg": ("kept", None)},
        ),
        "sidecar_txt_too_large": (
            {"side/bigtxt.jpg": good, "side/bigtxt.txt": b"x" * (SIDECAR_MAX_BYTES + 1)},
            {"side/bigtxt.jpg": ("error", "sidecar_too_large")},
        ),
        "sidecar_json_too_large": (
            {
                "side/bigjson.jpg": good,
                "side/bigjson.json": b"[" + b"1," * SIDECAR_MAX_BYTES + b"1]",
            },
            {"side/bigjson.jpg": ("error", "sidecar_too_large")},
        ),
        "sidecar_escapes_root": (
            {"side/esc.jpg": good, "side/esc.txt": link(outside / "secret.txt")},
            {"side/esc.jpg": ("error", "outside_root")},
        ),
        "sidecar_json_escapes_root": (
            {"side/escj.jpg": good, "side/escj.json": link("/etc/hostname")},
            {"side/escj.jpg": ("error", "outside_root")},
        ),
        "sidecar_fifo": (
            {"side/sfifo.jpg": good, "side/sfifo.txt": lambda p, c: _fifo(p)},
            {"side/sfifo.jpg": ("kept", None)},
        ),
        "sidecar_loop": (
            {"side/sloop.jpg": good, "side/sloop.txt": link("sloop.txt")},
            {"side/sloop.jpg": ("kept", None)},
        ),
        "sidecar_is_a_folder": (
            {"side/sdir.jpg": good, "side/sdir.txt/x": b"x"},
            {"side/sdir.jpg": ("kept", None)},
        ),
        "bad_json_sidecar": (
            {"side/badjson.jpg": good, "side/badjson.json": b"{not json"},
            {"side/badjson.jpg": ("kept", None)},
        ),
        "json_sidecar_not_utf8": (
            {"side/latjson.jpg": good, "side/latjson.json": b'{"a": "caf\xe9"}'},
            {"side/latjson.jpg": ("kept", None)},
        ),
        "json_sidecar_deep_nesting": (
            {"side/deepjson.jpg": good, "side/deepjson.json": b"[" * 100_000 + b"]" * 100_000},
            {"side/deepjson.jpg": ("kept", None)},
        ),
        "txt_sidecar_not_utf8": (
            {"side/lattxt.jpg": good, "side/lattxt.txt": b"caf\xe9 \xff\xfe"},
            {"side/lattxt.jpg": ("kept", None)},
        ),
        "txt_sidecar_nul_bytes": (
            {"side/nul.jpg": good, "side/nul.txt": b"a\x00b\x00" * 100},
            {"side/nul.jpg": ("kept", None)},
        ),
    }
    cases.update(more)
    return cases


def _touch(p: Path) -> Path:
    p.write_bytes(b"")
    return p


# the names, for test ids: the same table built on a blank photo
CASE_NAMES = list(
    _folder_cases(
        {"good": b"", "outside": Path("/nonexistent"), "photo": np.zeros((96, 128, 3), np.uint8)}
    )
)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, photos):
    base = tmp_path_factory.mktemp("hostile_folder")
    outside = base / "outside"
    outside.mkdir()
    photo = photos["chelsea"]
    ctx = {"good": jpeg_bytes(small(photo)), "outside": outside, "photo": photo}
    (outside / "secret.jpg").write_bytes(ctx["good"])
    (outside / "secret.txt").write_text("not for the dataset")
    (outside / "inner.jpg").write_bytes(ctx["good"])
    pool = base / "pool"
    pool.mkdir()
    cases = _folder_cases(ctx)
    for files, _ in cases.values():
        for rel, data in files.items():
            path = pool / rel  # a name with surrogates is written as its raw bytes
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(data):
                data(path, ctx)
            else:
                path.write_bytes(data)
    run = run_curate(
        base,
        pool,
        "folder",
        ["input.partition_size=16", f"input.max_file_bytes={MAX_FILE}"],
    )
    run.extra["cases"] = cases
    return run


def test_folder_run_exits_cleanly(folder_run):
    assert_clean_exit(folder_run)


def test_folder_run_writes_nothing_outside_the_output(folder_run):
    assert_nothing_else_touched(folder_run)


def test_folder_run_connects_to_loopback_only(folder_run):
    assert_only_loopback(folder_run)


def test_folder_every_input_has_exactly_one_row(folder_run):
    expected = [k for _, rows in folder_run.extra["cases"].values() for k, v in rows.items() if v]
    got = [r["source_key"] for r in folder_run.rows]
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_folder_case(folder_run, case):
    _, expected = folder_run.extra["cases"][case]
    for key, want in expected.items():
        if want is None:
            # no row: the key itself, or anything under a key ending in "/"
            hit = [
                r
                for r in folder_run.rows
                if r["source_key"] == key or (key.endswith("/") and r["source_key"].startswith(key))
            ]
            assert not hit, key
            continue
        rows = [r for r in folder_run.rows if r["source_key"] == key]
        assert len(rows) == 1, (key, rows)
        assert (rows[0]["status"], rows[0]["reason"]) == want, (key, rows[0])


def test_folder_connect_hook_ran_in_the_ray_workers(folder_run):
    """The audit hook is installed in the worker processes too (not only the driver): without
    it the loopback check would be vacuous for what the workers do."""
    assert len(folder_run.extra["hooked"]) >= 2, folder_run.extra["hooked"]
