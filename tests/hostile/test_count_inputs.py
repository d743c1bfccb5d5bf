"""A build's plan counts a webdataset pool's inputs before curating: hostile tars must not
break the count (they used to raise out of ``count_inputs``)."""

from __future__ import annotations

import gzip
import io
import tarfile

from curation.config import InputConfig
from curation.sources import count_inputs


def _tar(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_count_inputs_survives_hostile_tars(tmp_path):
    (tmp_path / "a.tar").write_bytes(_tar(["x.jpg", "x.txt", "y.jpg"]))  # 2 samples
    (tmp_path / "b.tar.gz").write_bytes(gzip.compress(_tar(["z.jpg"])))  # 1
    (tmp_path / "c.tar").write_bytes(b"not a tar at all")  # broken: one row
    (tmp_path / "d.tar").write_bytes(_tar(["w.jpg"])[:700])  # cut: w, then the break
    assert count_inputs(InputConfig(kind="webdataset", path=str(tmp_path))) == 2 + 1 + 1 + 2
