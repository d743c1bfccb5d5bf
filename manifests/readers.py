"""Any shard set of ours (image, video, text or mixed) in Ray Data and in Hugging Face
``datasets``, read by the libraries themselves with the options our layout needs.

A shard set's samples do not all have the same members: a text-only sample has only ``json``,
an image sample ``jpg`` (or ``png``/``webp``), a video sample one member per frame
(``f0000.jpg`` ... ``fNNNN.jpg``, as many as it has frames), and a mixture holds all of these.
webdataset reads that as it is (a dict per sample). The two table readers want one schema:

- ``ray.data.read_webdataset(dir)`` decodes images into arrays and builds its blocks from
  pandas, so a member that some samples lack becomes ``NaN``, and the blocks fail (``Tried to
  cast column f0001.jpg to the TensorArray tensor extension type``, ``unsupported element of
  type <class 'float'> (value: nan)``); with ``decoder=None`` it reads, but with ``NaN`` floats
  for the missing members and the media columns pickled as Python objects.
- ``datasets.load_dataset("webdataset", ...)`` infers its features from the first five samples
  and stops when they differ (``the files in the archive don't share the same prefix or the
  same types``); records of different tasks do not fit one inferred struct either.

So both functions here first list the set's members (:func:`member_names`: the union over its
tars, from the tar headers alone) and hand the real reader that one schema: every member a
column, ``None`` where a sample has no such member. ``__key__``, the ``json`` record and every
media member's bytes are exactly what :func:`manifests.shards.iter_samples` gives.

    from manifests.readers import hf_dataset, ray_dataset

    ray_dataset("out/demo_videos/caption").take(2)   # ray.data.Dataset; media as bytes
    hf_dataset("out/demo_stage1")[0]                  # datasets.Dataset; json as a dict,
                                                      # images as PIL (decode=False: bytes)

webdataset itself needs no helper:
``webdataset.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False)``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from manifests.dataset import shard_paths
from manifests.shards import _SKIP_META, split_key

#: extensions Hugging Face ``datasets`` reads as images (its webdataset builder's own list,
#: narrowed to what a shard set of ours may hold)
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def member_names(paths: Iterable[str | Path]) -> list[str]:
    """Every member extension (``json``, ``jpg``, ``f0000.jpg``, ...) that some sample of these
    tars has, sorted; read from the tar headers, the data passed by seeking."""
    names: set[str] = set()
    for path in paths:
        with tarfile.open(path, "r:") as tf:
            while (member := tf.next()) is not None:
                tf.members = []
                if not member.isreg() or _SKIP_META.match(member.name):
                    continue
                _, ext = split_key(member.name)
                if ext is not None:
                    names.add(ext.lower())
    return sorted(names)


def _paths(shard_set: str | Path) -> list[str]:
    paths = [str(p) for p in shard_paths(shard_set)]
    if not paths:
        raise ValueError(f"{shard_set}: the shard set lists no shards")
    return paths


class _Complete:
    """Ray's ``decoder``: every member a column, ``None`` where the sample has none; bytes as
    they are in the tar (a picklable class, so Ray ships it to its read tasks)."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        row = {"__key__": sample["__key__"], "__url__": sample.get("__url__")}
        for name in self.names:
            row[name] = sample.get(name)
        return row


def ray_dataset(shard_set: str | Path, **kwargs: Any):
    """The shard set at ``shard_set`` (a folder with ``dataset.json``) as a
    ``ray.data.Dataset``, read by ``ray.data.read_webdataset``: one row per sample, columns
    ``__key__``, ``__url__`` and one per member (bytes, or ``None`` where a sample lacks it).
    ``kwargs`` go to ``read_webdataset`` (e.g. ``override_num_blocks``)."""
    import ray.data

    paths = _paths(shard_set)
    return ray.data.read_webdataset(paths, decoder=_Complete(member_names(paths)), **kwargs)


def hf_features(names: list[str], decode: bool = True):
    """The ``datasets.Features`` of a shard set with these members: ``json`` as ``Json`` (any
    record; ``datasets`` keeps its floats to 10 decimal places), image members as ``Image``,
    text as strings, anything else as binary."""
    import datasets

    cols: dict[str, Any] = {}
    for name in names:
        ext = name.rsplit(".", 1)[-1]
        if name in ("json", "jsn"):
            cols[name] = datasets.Json()
        elif ext in IMAGE_EXTS:
            cols[name] = datasets.Image(decode=decode)
        elif ext in ("txt", "text"):  # the builder decodes these to str
            cols[name] = datasets.Value("string")
        else:
            cols[name] = datasets.Value("binary")
    cols["__key__"] = datasets.Value("string")
    cols["__url__"] = datasets.Value("string")
    return datasets.Features(cols)


def hf_dataset(shard_set: str | Path, *, decode: bool = True, **kwargs: Any):
    """The shard set at ``shard_set`` as a ``datasets.Dataset``, read by the ``webdataset``
    builder of Hugging Face ``datasets`` with the set's full features (:func:`hf_features`):
    ``json`` a dict, images PIL images (``decode=False``: ``{"bytes", "path"}``), ``None``
    where a sample lacks a member. ``kwargs`` go to ``datasets.load_dataset`` (e.g.
    ``cache_dir``, ``streaming=True``)."""
    import datasets

    paths = _paths(shard_set)
    features = hf_features(member_names(paths), decode=decode)
    kwargs.setdefault("split", "train")
    return datasets.load_dataset(
        "webdataset", data_files={"train": paths}, features=features, **kwargs
    )
