#!/usr/bin/env bash
# Build .venv-img2dataset: img2dataset 1.47 in a venv of its own, the peer of
# bench/bench_download.py (URL pool -> WebDataset shards). A venv of its own because img2dataset
# pins libraries (pyarrow, albumentations, opencv, wandb, ...) that the main venv must not have to
# agree with.
#
# Nothing it runs may reach the network: the benchmark runs it against a server on 127.0.0.1
# with wandb off (--enable_wandb False, WANDB_MODE=disabled) and NO_ALBUMENTATIONS_UPDATE=1
# (albumentations, which img2dataset imports, otherwise asks PyPI for a newer version of itself
# on every import).
#
# Idempotent: a stamp file newer than this script means nothing to do.
# Usage: scripts/setup_img2dataset_venv.sh   (PYTHON=python3.11 IMG2DATASET_VENV=... to override)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${IMG2DATASET_VENV:-.venv-img2dataset}
SPEC=${IMG2DATASET_SPEC:-img2dataset==1.47.*}
STAMP=$VENV/.setup-done
PY=$VENV/bin/python

die() { echo "setup_img2dataset_venv: $*" >&2; exit 1; }

if [[ -f $STAMP && $STAMP -nt scripts/setup_img2dataset_venv.sh ]]; then
  echo "setup_img2dataset_venv: $VENV is up to date ($STAMP)"
  exit 0
fi

start=$SECONDS
rm -f "$STAMP"
[[ -x $PY ]] || "$PYTHON" -m venv "$VENV" || die "could not create $VENV with $PYTHON"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q "$SPEC" || die "pip install $SPEC failed"

# the check: the command is there, answers --help, and the package imports
[[ -x $VENV/bin/img2dataset ]] || die "$VENV/bin/img2dataset is missing"
NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled "$VENV/bin/img2dataset" --help >/dev/null 2>&1 \
  || die "$VENV/bin/img2dataset --help failed"
version=$("$PY" -c "import importlib.metadata as m; print(m.version('img2dataset'))") \
  || die "img2dataset does not import"

touch "$STAMP"
echo "setup_img2dataset_venv: img2dataset $version in $VENV, done in $((SECONDS - start)) s" \
  "($(du -sh "$VENV" | cut -f1))"
