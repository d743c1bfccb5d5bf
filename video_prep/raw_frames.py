"""A raw video's 1-fps frames on disk while its partition task works on it, so the task's memory
does not grow with the video.

The scenes decode hands every grid frame (JPEG) to a :class:`FrameStore`, which appends it to
one file and keeps only the offsets (8 bytes a frame). The clips are planned once the decode
has ended (a shot's length, so its split, is known only at the next cut), then every later
step reads just the frames it needs: the captions stage a few clips' frames at a time, the
shard writer one sample's frames at a time (samples carry grid indices, not bytes, until
then). Before, the whole grid (~290 MB for 2 h at 640 px) was held, then copied into the clip
rows, the video's row and its samples: several copies at once.

The file lives in the job's work folder, on the output's disk (not a RAM-backed ``/tmp``). One
pass (``OUT/_work/videos/spill/p{partition}/``): the sink removes each video's file once its
samples are written, and a partition's folder when the partition starts again after a crash.
Three passes (``OUT/_work/scenes/spill/``): the scenes pass writes them, the captions actors and
the write pass read them, and they stay until the job is done (a rerun of a later pass reads
them again), as the frames in the scenes pass's pieces did before.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator, MutableMapping
from pathlib import Path


class FrameStore(MutableMapping[int, bytes]):
    """Frames ``0..n-1`` of one video, appended in order to one file: ``store[k] = jpeg`` while
    decoding, ``store[k]`` after. :meth:`close` writes the offsets beside it (``.idx``), so
    another stage of the task reopens the store by its path (:meth:`open`)."""

    def __init__(self, path: str | Path, offsets: array | None = None):
        self.path = Path(path)
        self._offsets = offsets if offsets is not None else array("q", [0])
        writing = offsets is None
        if writing:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w+b" if writing else "rb")  # noqa: SIM115  # closed in close()

    @classmethod
    def open(cls, path: str | Path) -> FrameStore:
        """A closed store, for reading."""
        offsets = array("q")
        offsets.frombytes(Path(f"{path}.idx").read_bytes())
        return cls(path, offsets)

    def __setitem__(self, k: int, data: bytes) -> None:
        if k != len(self):
            raise KeyError(f"frame {k}: frames are stored in order, {len(self)} comes next")
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))

    def __getitem__(self, k: int) -> bytes:
        if not 0 <= k < len(self):
            raise KeyError(k)
        self._file.flush()
        start, end = self._offsets[k], self._offsets[k + 1]
        return os.pread(self._file.fileno(), end - start, start)

    def __delitem__(self, k: int) -> None:
        raise TypeError("a FrameStore only grows")

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self)))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> None:
        """Flush the frames and write the offsets: the store can be reopened by its path."""
        if self._file.writable():
            self._file.flush()
            Path(f"{self.path}.idx").write_bytes(self._offsets.tobytes())
        self._file.close()

    def frames(self, indices: list[int]) -> list[bytes]:
        return [self[k] for k in indices]


def remove_store(path: str | Path) -> None:
    """A video's frames and offsets, once its samples are written."""
    for p in (Path(path), Path(f"{path}.idx")):
        p.unlink(missing_ok=True)
