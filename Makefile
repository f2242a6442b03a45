# Two commands do everything on a fresh machine: `make run` and `make test`.
# Every target that runs Python depends on `setup`, which creates .venv (Python 3.10)
# from the one lock file, constraints.txt, and is a no-op when nothing changed.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# Every process started here uses Keras 2 (tf-keras): TFX 1.16 and TFMA need it.
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONDONTWRITEBYTECODE := 1

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= pipeline/configs/default.yaml
# Config overrides for the generator and the pipeline, e.g.
#   make run SET="--set world.num_clicks=1000000 --set window.days=14"
SET    ?=
ARGS   ?=
PYTEST_ARGS ?=
# The suite on every core (pytest-xdist); each end-to-end fixture stays on one
# worker (conftest.py). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= auto
# Vertex: the images (also passed to the config as vertex.image and
# vertex.student.image when set) and the compiled template.
IMAGE     ?=
TPU_IMAGE ?=
TEMPLATE  ?= outputs/vertex/pipeline.json
VERTEX_SET = $(if $(IMAGE),--set vertex.image=$(IMAGE)) $(if $(TPU_IMAGE),--set vertex.student.image=$(TPU_IMAGE))

.PHONY: help setup data schema run bootstrap sweep nightly image image-tpu push-images compile submit schedule test test-fast bench bench-world bench-quality bench-quant bench-serving bench-pruning bench-sweep bench-observability lock clean bench-fallback bench-promotion

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: $(STAMP)  ## Create .venv (Python 3.10) and install the locked environment.

$(STAMP): constraints.txt pyproject.toml scripts/find_python310.sh
	@py310=$$(scripts/find_python310.sh); \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then \
	  rm -rf $(VENV); echo "creating $(VENV) with $$py310"; "$$py310" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade "pip<25" wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,bench]'
	@touch $@

data: setup  ## Generate the synthetic world named by CONFIG if it is not there yet.
	@# TensorFlow's and google-api-core's import-time notices say nothing about the data.
	TF_CPP_MIN_LOG_LEVEL=3 PYTHONWARNINGS=ignore::FutureWarning \
	  $(PY) -m world.generator --config $(CONFIG) --if-absent $(SET)

schema: setup  ## Write the TFDV schema and serving contract of CONFIG's dataset beside its spec.
	$(PY) -m pipeline.cli schema --config $(CONFIG) $(SET)

run: data  ## Generate the default world if absent and run the pipeline locally (any dataset: CONFIG=...).
	$(PY) -m pipeline.cli run --auto-bootstrap --config $(CONFIG) $(SET) $(ARGS)

bootstrap: data  ## Push the production recipe as the first baseline (explicit bootstrap).
	$(PY) -m pipeline.cli run --bootstrap --config $(CONFIG) $(SET) $(ARGS)

sweep: data  ## A local sweep run: the Tuner on the tune split, best values recorded for nightly runs (needs sweep.tune_fraction > 0).
	$(PY) -m pipeline.cli sweep --config $(CONFIG) $(SET) $(ARGS)

nightly: setup  ## One local night (what deploy/nightly.cron runs): T by policy, no implicit bootstrap.
	$(PY) -m pipeline.cli nightly --config $(CONFIG) $(SET) $(ARGS)

image:  ## Build the pipeline image (IMAGE=<registry>/<repo>/pipeline:<tag>).
	@test -n "$(IMAGE)" || { echo "set IMAGE=<registry>/<repo>/pipeline:<tag>" >&2; exit 2; }
	docker build -f deploy/Dockerfile -t $(IMAGE) .

image-tpu: image  ## Build the student's TPU training image (TPU_IMAGE=...) on top of IMAGE.
	@test -n "$(TPU_IMAGE)" || { echo "set TPU_IMAGE=<registry>/<repo>/student-tpu:<tag>" >&2; exit 2; }
	docker build -f deploy/Dockerfile.tpu --build-arg PIPELINE_IMAGE=$(IMAGE) -t $(TPU_IMAGE) deploy

push-images: image image-tpu  ## Push both images to their registry.
	docker push $(IMAGE)
	docker push $(TPU_IMAGE)

compile: setup  ## Compile the Vertex pipeline JSON to TEMPLATE (offline; needs the vertex.* keys).
	$(PY) -m pipeline.cli compile --config $(CONFIG) --output $(TEMPLATE) $(VERTEX_SET) $(SET) $(ARGS)

submit: compile  ## Submit one Vertex AI run of TEMPLATE (T resolved when it starts).
	$(PY) -m pipeline.cli submit --config $(CONFIG) --template $(TEMPLATE) $(VERTEX_SET) $(SET) $(ARGS)

schedule: compile  ## Create the nightly Vertex AI schedule of TEMPLATE (vertex.schedule.*).
	$(PY) -m pipeline.cli schedule --config $(CONFIG) --template $(TEMPLATE) $(VERTEX_SET) $(SET) $(ARGS)

test: setup  ## Run the whole suite (unit, executor, end-to-end, compile tests).
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: setup  ## Run the suite without the end-to-end DAG tests.
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not e2e" $(PYTEST_ARGS)

bench: bench-world bench-quality bench-quant bench-serving bench-pruning  ## All benchmarks (hours on 2 cores: see docs/benchmarks.md); quality results in bench/reported/.

bench-world: setup  ## Generator throughput and memory; difficulty (GLM vs floor).
	$(PY) -m bench.world_bench $(ARGS)

bench-quality: setup  ## Every recipe on 5 worlds x 3 training seeds, float and INT8, with CIs (ARGS=--quick: minutes).
	$(PY) -m bench.quality_bench $(ARGS)
	$(PY) -m bench.readme

# The observability world of docs/observability-world.md, with the pipeline reading
# its priors (and, from default.yaml, the teacher calibrating its offsets on the
# panel); H is the heterogeneity, WORLDS the number of worlds.
H ?= 1
WORLDS ?= 2
OBS_WORLD = --set world.observability_heterogeneity=$(H) --set world.panel_share=0.03 \
  --set observability.priors_source=world_manifest
bench-observability: setup  ## The recipes and panel baselines on the observability world at heterogeneity H (WORLDS worlds x 1 seed; default 2).
	$(PY) -m bench.quality_bench --worlds $(WORLDS) --seeds 1 --recipes production offset kd_full \
	  offset_panel panel_only offset_obs_head $(OBS_WORLD) --name observability-h$(H) \
	  --out bench/reported/observability_pilot_h$(H).json $(ARGS)
	$(PY) -m bench.readme

bench-quant: setup  ## The Quantizer on the benchmark's KD student: size, error, NLL, latency per mode.
	$(PY) -m bench.quant_bench $(ARGS)

bench-serving: setup  ## Latency as ads serving calls it (batches 1-1024, per request), size, ops and NLL per model (ARGS=--quick: minutes).
	$(PY) -m bench.serving_bench $(ARGS)
	$(PY) -m bench.readme

bench-sweep: setup  ## A sweep on a benchmark world (tune NLL beside true excess risk), the chosen values vs defaults on unseen worlds (reduced size, ~25 min on 2 cores).
	nice -n 10 $(PY) -m bench.sweep_bench $(ARGS)
	$(PY) -m bench.readme

bench-pruning: setup  ## The student pruned at 0/30/50/70% before INT8: bytes raw and gzip, NLL change with CIs, latency at batch 1 and 256.
	$(PY) -m bench.pruning_bench $(ARGS)
	$(PY) -m bench.readme

bench-promotion: setup  ## Promotion power: each rule's share of simulated nights promoted, by candidate and eval size (bench/reported/promotion.json; ~20 min on 1 core).
	nice -n 10 $(PY) -m bench.promotion_bench $(ARGS)
	$(PY) -m bench.readme

bench-fallback: setup  ## The lag-cost curve: teacher lag 0/24/40/72 h on one world, the KD student's quality and failed fraction (~25 min on 2 cores).
	nice -n 10 $(PY) -m bench.fallback_bench $(ARGS)
	$(PY) -m bench.readme

lock:  ## Rebuild constraints.txt from the direct pins in pyproject.toml.
	@py310=$$(scripts/find_python310.sh); tmp=$$(mktemp -d); \
	"$$py310" -m venv $$tmp/venv; $$tmp/venv/bin/pip install --quiet --upgrade "pip<25" wheel; \
	$$tmp/venv/bin/pip install --quiet -e '.[test,bench]'; \
	{ sed -n '1,4p' constraints.txt; $$tmp/venv/bin/pip freeze --exclude-editable | grep -v ' @ '; } > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; rm -rf $$tmp

clean:  ## Remove generated data and pipeline outputs (keeps .venv).
	rm -rf data outputs serving bench/results
