"""Hostile WebDataset tars through the real ``vl3data curate`` (``input.kind=webdataset``):
one run over a folder of bad tars (one tar per kind, one partition each), then one test per
kind checking every row the tar gave (key, status, reason), plus the run-wide promises."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import tarfile

import numpy as np
import pytest

from curation.sources.tars import SIDECAR_MAX_BYTES
from tests.hostile.harness import (
    assert_clean_exit,
    assert_nothing_else_touched,
    assert_only_loopback,
    run_curate,
)
from tests.hostile.media import image_cases, small
from vl3data.sample_media import bomb_png_header, jpeg_bytes, png_bytes

# real CLI runs over a whole corpus: `make test-slow` (and CI) runs them; `make test` stays
# under 10 minutes on 2 cores
pytestmark = pytest.mark.slow

MAX_FILE = 3_000_000
KEPT = ("kept", None)


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "", size=None):
    return (name, data, kind, link, size)


def tar_bytes(members, fmt=tarfile.GNU_FORMAT, encoding="utf-8", mode="w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=fmt, encoding=encoding) as tar:
        for name, data, kind, link, _size in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.mtime = 1_700_000_000
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 5
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _cases(photo: np.ndarray) -> dict[str, tuple[str, bytes, list[tuple[str, tuple]]]]:
    """case -> (tar file name, its bytes, [(sample key, (status, reason)), ...] in order)."""
    good = jpeg_bytes(small(photo))
    good2 = jpeg_bytes(small(photo[::-1].copy()))
    imgs = image_cases(photo)
    meta = json.dumps({"caption": "from json", "url": "http://x/y"}).encode()
    two = [
        member("000000.jpg", good),
        member("000000.txt", b"a cat"),
        member("000000.json", meta),
        member("000001.jpg", good2),
        member("000001.json", meta),
    ]
    plain = tar_bytes(two)
    gz = gzip.compress(plain, mtime=0)
    corrupt_gz = bytearray(gzip.compress(tar_bytes([*two, member("000002.jpg", good)]), mtime=0))
    mid = len(corrupt_gz) // 2
    corrupt_gz[mid : mid + 64] = bytes(64)
    a_b = tar_bytes([member("a.jpg", good), member("b.jpg", good2)])
    a_end = 512 + -(-len(good) // 512) * 512
    hdr = tarfile.TarInfo("x.jpg")
    hdr.size = 10 * 2**30  # a header that claims 10 GB, then the tar ends
    lying = hdr.tobuf(tarfile.GNU_FORMAT) + good
    rng = np.random.default_rng(0)

    C: dict[str, tuple[str, bytes, list]] = {
        "img2dataset_plain": ("plain.tar", plain, [("000000", KEPT), ("000001", KEPT)]),
        "gzipped_tgz": ("gz.tgz", gz, [("000000", KEPT), ("000001", KEPT)]),
        "plain_tar_named_tar_gz": (
            "plain_named.tar.gz",
            plain,
            [("000000", KEPT), ("000001", KEPT)],
        ),
        "xz_tar_named_tar": (
            "xz_named.tar",
            lzma.compress(plain),
            [("000000", KEPT), ("000001", KEPT)],
        ),
        "truncated_inside_member": (
            "trunc_member.tar",
            a_b[: a_end + 512 + 1000],
            [("a", KEPT), ("b", ("error", "tar_error:ReadError"))],  # b's own row says why
        ),
        "truncated_inside_header": (
            "trunc_header.tar",
            a_b[: a_end + 100],
            # tarfile alone reads a short header block as the end of the archive
            [("a", KEPT), ("__tar__", ("error", "tar_error:ReadError"))],
        ),
        "truncated_between_members": (
            "trunc_between.tar",
            a_b[:a_end],  # whole members, but b and the end-of-archive blocks are gone
            [("a", KEPT), ("__tar__", ("error", "tar_error:ReadError"))],
        ),
        "gzip_corrupt": (
            "corrupt.tar.gz",
            bytes(corrupt_gz),
            [("000000", ("error", "tar_error:ReadError"))],  # the zeroed bytes fall in its image,
        ),
        "gzip_truncated": (
            "gz_trunc.tar.gz",
            gz[: len(gz) - 200],
            [("000000", KEPT), ("000001", ("error", "tar_error:ReadError"))],
        ),
        "zero_byte_file": ("zero.tar", b"", [("__tar__", ("error", "tar_error:ReadError"))]),
        "empty_tar": ("empty.tar", tar_bytes([]), []),
        "not_a_tar": (
            "notatar.tar",
            b"hello, this is not a tar\n" * 100,
            [("__tar__", ("error", "tar_error:ReadError"))],
        ),
        "random_bytes": (
            "random.tar",
            rng.bytes(20_000),
            [("__tar__", ("error", "tar_error:ReadError"))],
        ),
        "header_claims_10gb": (
            "lying.tar",
            lying,
            [("x", ("error", "file_too_large")), ("__tar__", ("error", "tar_error:ReadError"))],
        ),
        "dotdot_member": (
            "dotdot.tar",
            tar_bytes(
                [member("../evil.jpg", good), member("a/../../b.jpg", good), member("ok.jpg", good)]
            ),
            [
                ("../evil", ("error", "unsafe_path")),
                ("a/../../b", ("error", "unsafe_path")),
                ("ok", KEPT),
            ],
        ),
        "absolute_member": (
            "abs.tar",
            tar_bytes([member("/etc/abs.jpg", good)]),
            [("/etc/abs", ("error", "unsafe_path"))],
        ),
        "windows_drive_member": (
            "win.tar",
            tar_bytes([member("C:\\x.jpg", good)]),
            [("C:\\x", ("error", "unsafe_path"))],
        ),
        "pax_long_dotdot_path": (
            "pax.tar",
            tar_bytes([member("x/" * 60 + "../" * 70 + "evil.jpg", good)], fmt=tarfile.PAX_FORMAT),
            [("x/" * 60 + "../" * 70 + "evil", ("error", "unsafe_path"))],
        ),
        "gnu_long_name": (
            "long.tar",
            tar_bytes([member("d/" * 120 + "long.jpg", good)]),
            [("d/" * 120 + "long", KEPT)],
        ),
        "symlink_member": (
            "symlink.tar",
            tar_bytes([member("s.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd")]),
            [("s", ("error", "unsafe_member"))],
        ),
        "hardlink_member": (
            "hardlink.tar",
            tar_bytes(
                [member("h0.jpg", good), member("h1.jpg", kind=tarfile.LNKTYPE, link="/etc/shadow")]
            ),
            [("h0", KEPT), ("h1", ("error", "unsafe_member"))],
        ),
        "char_device_member": (
            "chr.tar",
            tar_bytes([member("c.jpg", kind=tarfile.CHRTYPE)]),
            [("c", ("error", "unsafe_member"))],
        ),
        "block_device_member": (
            "blk.tar",
            tar_bytes([member("b.jpg", kind=tarfile.BLKTYPE)]),
            [("b", ("error", "unsafe_member"))],
        ),
        "fifo_member": (
            "fifo.tar",
            tar_bytes([member("f.jpg", kind=tarfile.FIFOTYPE)]),
            [("f", ("error", "unsafe_member"))],
        ),
        "directory_members": (
            "dirs.tar",
            tar_bytes(
                [
                    member("d1", kind=tarfile.DIRTYPE),
                    member("d1/a.jpg", good),
                    member("d2/", kind=tarfile.DIRTYPE),
                ]
            ),
            [("d1/a", KEPT)],
        ),
        "repeated_key_adjacent": (
            "rep_adj.tar",
            tar_bytes([member("x.jpg", good), member("x.jpg", good2)]),
            [("x", KEPT), ("x#2", KEPT)],
        ),
        "repeated_key_apart": (
            "rep_apart.tar",
            tar_bytes([member("x.jpg", good), member("y.jpg", good2), member("x.jpg", good2)]),
            [("x", KEPT), ("y", KEPT), ("x#2", KEPT)],
        ),
        "hash_key_collides_with_repeat_suffix": (
            "rep_hash.tar",
            tar_bytes([member("x.jpg", good), member("x.jpg", good2), member("x#2.jpg", good)]),
            [("x", KEPT), ("x#2", KEPT), ("x#2#2", KEPT)],
        ),
        "only_json": (
            "only_json.tar",
            tar_bytes([member("j.json", meta)]),
            [("j", ("error", "no_image_member"))],
        ),
        "only_txt_and_unknown": (
            "only_txt.tar",
            tar_bytes([member("t.txt", b"x"), member("u.bin", b"\x00" * 10)]),
            [("t", ("error", "no_image_member")), ("u", ("error", "no_image_member"))],
        ),
        "nested_tar_member": (
            "nested.tar",
            tar_bytes([member("inner.tar", plain)]),
            [("inner", ("error", "no_image_member"))],
        ),
        "two_images_one_sample": (
            "two_img.tar",
            tar_bytes(
                [
                    member("k.jpg", good),
                    member(
                        "k.png", png_bytes(__import__("PIL.Image").Image.open(io.BytesIO(good)))
                    ),
                ]
            ),
            [("k", KEPT)],
        ),
        "oversized_member": (
            "big.tar",
            tar_bytes([member("big.jpg", good + b"\x00" * MAX_FILE), member("next.jpg", good)]),
            [("big", ("error", "file_too_large")), ("next", KEPT)],
        ),
        "oversized_sidecar_in_tar_gz": (
            "bigtxt.tar.gz",
            gzip.compress(
                tar_bytes(
                    [
                        member("a.jpg", good),
                        member("a.txt", b"y" * (SIDECAR_MAX_BYTES + 1)),
                        member("b.jpg", good2),
                    ]
                ),
                mtime=0,
            ),
            [("a", ("error", "sidecar_too_large")), ("b", KEPT)],
        ),
        "oversized_json_sidecar": (
            "bigjson.tar",
            tar_bytes([member("a.json", b" " * (SIDECAR_MAX_BYTES + 1)), member("a.jpg", good)]),
            [("a", ("error", "sidecar_too_large"))],
        ),
        "non_utf8_member_names": (
            "latin1.tar",
            tar_bytes(
                [member("caf\u00e9.jpg", good), member("caf\u00e9.txt", b"caf\xe9")],
                encoding="latin-1",
            ),
            [("caf\\xe9", KEPT)],
        ),
        "upper_case_extension": ("upper.tar", tar_bytes([member("U.JPG", good)]), [("U", KEPT)]),
        "empty_name_key": ("dotname.tar", tar_bytes([member(".jpg", good)]), [("", KEPT)]),
        "zero_size_member": (
            "zero_member.tar",
            tar_bytes([member("z.jpg", b"")]),
            [("z", ("error", "empty_file"))],
        ),
        "bad_json_sidecar": (
            "badjson.tar",
            tar_bytes([member("a.jpg", good), member("a.json", b"{nope")]),
            [("a", KEPT)],
        ),
        "deep_json_sidecar": (
            "deepjson.tar",
            tar_bytes([member("a.jpg", good), member("a.json", b"[" * 100_000 + b"]" * 100_000)]),
            [("a", KEPT)],
        ),
        "non_utf8_txt_sidecar": (
            "lattxt.tar",
            tar_bytes([member("a.jpg", good), member("a.txt", b"\xff\xfe caf\xe9")]),
            [("a", KEPT)],
        ),
        "text_member_named_jpg": (
            "text.tar",
            tar_bytes([member("t.jpg", imgs["text.jpg"][0])]),
            [("t", ("error", "not_an_image"))],
        ),
        "truncated_jpeg_member": (
            "trunc_jpeg.tar",
            tar_bytes([member("t.jpg", imgs["truncated.jpg"][0])]),
            [("t", ("error", "truncated"))],
        ),
        "bomb_member": (
            "bomb.tar",
            tar_bytes([member("b.png", bomb_png_header())]),
            [("b", ("dropped", "too_many_pixels"))],
        ),
        "corrupt_png_member": (
            "corrupt_png.tar",
            tar_bytes([member("c.png", imgs["corrupt_pixels.png"][0])]),
            [("c", ("error", "decode_error"))],
        ),
    }
    return C


CASE_NAMES = list(_cases(np.zeros((96, 128, 3), np.uint8)))


@pytest.fixture(scope="module")
def tar_run(tmp_path_factory, photos):
    base = tmp_path_factory.mktemp("hostile_tars")
    pool = base / "pool"
    pool.mkdir()
    cases = _cases(photos["chelsea"])
    for fname, data, _ in cases.values():
        (pool / fname).write_bytes(data)
    run = run_curate(base, pool, "webdataset", [f"input.max_file_bytes={MAX_FILE}"])
    run.extra["cases"] = cases
    return run


def test_tars_run_exits_cleanly(tar_run):
    assert_clean_exit(tar_run)


def test_tars_run_writes_nothing_outside_the_output(tar_run):
    assert_nothing_else_touched(tar_run)


def test_tars_run_connects_to_loopback_only(tar_run):
    assert_only_loopback(tar_run)


def test_tars_every_sample_has_exactly_one_row(tar_run):
    expected = [f"{f}#{k}" for f, _, rows in tar_run.extra["cases"].values() for k, _ in rows]
    assert sorted(r["source_key"] for r in tar_run.rows) == sorted(expected)
    assert len({r["id"] for r in tar_run.rows}) == len(tar_run.rows)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_tar_case(tar_run, case):
    fname, _, expected = tar_run.extra["cases"][case]
    got = [
        (r["source_key"][len(fname) + 1 :], (r["status"], r["reason"]))
        for r in tar_run.rows
        if r["source_key"].startswith(fname + "#")
    ]
    assert sorted(got) == sorted(expected)
