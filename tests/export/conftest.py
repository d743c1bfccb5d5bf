"""Shard sets of every kind, made once per session by the real jobs and shared with the readers'
tests (``job_sets``: ``curate`` on real photos, ``video`` on ffmpeg-made clips with caption,
streaming and grounding tasks, ``mix`` for a text-only and a mixed mixture), plus one small
hand-written set of the odd records an import can bring (several images, PNG, no tag, a tag
too many, system and user/assistant turns, a missing member, broken JSON, an unsafe key)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from manifests.dataset import write_dataset_json
from manifests.shards import ShardSetWriter


def _jpeg(array, fmt: str = "JPEG") -> bytes:
    import io

    buf = io.BytesIO()
    im = Image.fromarray(array)
    im.thumbnail((64, 64))
    im.save(buf, format=fmt)
    return buf.getvalue()


def _turns(q: str, a: str = "An answer.") -> list[dict]:
    return [{"from": "human", "value": q}, {"from": "gpt", "value": a}]


#: key -> (record, member extensions, expected skip reasons {layout: reason} or {} when kept)
def odd_samples(photos: dict) -> list[tuple[str, object, dict[str, bytes], dict]]:
    pics = [photos[n] for n in sorted(photos)[:3]]
    jpg, jpg2, png = _jpeg(pics[0]), _jpeg(pics[1]), _jpeg(pics[2], "PNG")
    both = {"videollama3": None, "llava": None}
    return [
        ("two_images", {"image": ["x.i00.jpg", "x.i01.png"], "conversations": _turns(
            "<image>\n<image>\nCompare them.")}, {"i00.jpg": jpg, "i01.png": png}, {}),
        ("no_tag", {"image": ["no_tag.png"], "conversations": _turns("What is it?")},
         {"png": png}, {}),
        ("tag_too_many", {"image": ["k.jpg"], "conversations": _turns("<image><image> Hm?")},
         {"jpg": jpg}, dict.fromkeys(both, "image_tag_mismatch")),
        ("system_turn", {"image": ["k.jpg"], "conversations": [
            {"from": "system", "value": "Be brief."}, *_turns("<image>\nWhat?")]},
         {"jpg": jpg2}, {"llava": "system_turn_not_in_llava"}),
        ("user_roles", {"conversations": [{"from": "user", "value": "Hi?"},
                                          {"from": "assistant", "value": "Hello."}]}, {}, {}),
        ("missing_member", {"image": ["k.jpg"], "conversations": _turns("<image>\nWhat?")},
         {"png": png}, dict.fromkeys(both, "missing_member")),
        ("no_conversations", {"image": ["k.jpg"], "key": "k"}, {"jpg": jpg},
         dict.fromkeys(both, "no_conversations")),
        ("bad_json", b"{not json", {}, dict.fromkeys(both, "bad_json")),
        ("../odd key/é", {"image": ["../odd key/é.jpg"], "conversations": _turns("<image>\nQ?")},
         {"jpg": jpg}, {}),
    ]  # fmt: skip


def write_odd_set(out: Path, photos: dict) -> Path:
    w = ShardSetWriter(out, "odd", max_count=4, max_bytes=10**9)
    for key, rec, members, _ in odd_samples(photos):
        data = rec if isinstance(rec, bytes) else json.dumps(rec).encode()
        w.write({"__key__": key, "json": data, **members})
    write_dataset_json(
        out, name="odd", modality="image", task="test", shards=w.close(), config={}, config_hash="t"
    )
    return out


@pytest.fixture(scope="session")
def export_sets(job_sets, tmp_path_factory, photos) -> dict[str, Path]:
    """The session's sets made by the real jobs (tests/conftest.py ``job_sets``: image, caption
    and streaming videos, text and mixed mixtures; grounding records are caption-shaped) and
    the hand-written odd set."""
    sets = {k: v for k, v in job_sets.items() if k not in ("video", "grounding")}  # as caption
    sets["caption"] = job_sets["video"]
    sets["odd"] = write_odd_set(tmp_path_factory.mktemp("odd"), photos)
    return sets


@pytest.fixture(scope="session")
def exported(export_sets, tmp_path_factory) -> dict[str, Path]:
    """Every set exported once in both layouts (one pass each)."""
    from export.run import export_shard_set

    root = tmp_path_factory.mktemp("exported")
    return {kind: _export(export_shard_set, src, root / kind) for kind, src in export_sets.items()}


def _export(fn, src: Path, out: Path) -> Path:
    fn(src, out, ["videollama3", "llava"])
    return out
