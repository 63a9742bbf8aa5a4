# Two commands do all the set-up on a fresh machine:
#   make demo   -- creates .venv with the pinned dependencies, runs the whole pipeline on the embedded demo
#   make test   -- runs the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 2
DEMO := --configfile config/demo.yaml
export HF_HUB_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: venv demo demo-data demo-report test lint dry-run figures rerun-model clean-demo add-model plan \
	share-cache figures-from-cache findings-check faults

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

## The upstream servers of the demo: generated archives, their registry and tiny trained models.
demo-data: venv data/demo/upstream/datasets.yaml

data/demo/upstream/datasets.yaml: src/clip_robustness/demo/generate.py src/clip_robustness/demo/archives.py src/clip_robustness/demo/cue_conflict.py src/clip_robustness/demo/models.py config/demo/models.tsv config/datasets.yaml
	$(PY) -m clip_robustness.demo data/demo/upstream

## The whole pipeline on the demo, then its HTML report.
demo: demo-data
	$(SNAKEMAKE) $(DEMO) --cores $(CORES) --scheduler greedy
	$(MAKE) demo-report

demo-report: demo-data
	$(SNAKEMAKE) $(DEMO) --cores $(CORES) --report results/report.html

## Figures and tables only, from cached metrics (no GPU, no logits job).
figures: venv
	$(SNAKEMAKE) --cores $(CORES) figures

## The shared cache (README, "Regenerate all figures from cached logits"): results/shared_cache.tar holds the logits,
## manifests, heads, weights records, registries and versions, with a checksum list. Example for the demo:
##   make share-cache SNAKEMAKE_ARGS="--configfile config/demo.yaml --cores 2"
share-cache: venv
	$(SNAKEMAKE) $(SNAKEMAKE_ARGS) share_cache

## On any machine (a fresh clone: no dataset, no weights, no GPU): verify a shared cache, then compute metrics, figures,
## tables, findings and the report from it. Only the rules that read the cache may run (--allowed-rules): no download,
## extraction, decode or logits job is ever planned. Example: make figures-from-cache CACHE=shared_cache.tar
FROM_CACHE := --configfile results/shared_cache/config.yaml --cores $(CORES)
export FROM_CACHE_RULES := from clip_robustness.figures import FIGURE_NAMES; \
	from clip_robustness.workflow.share import from_cache_rules; print(*from_cache_rules(FIGURE_NAMES))
figures-from-cache: venv
	@test -n "$(CACHE)" || { echo "usage: make figures-from-cache CACHE=<shared_cache.tar from make share-cache>" >&2; exit 2; }
	$(PY) -m clip_robustness.workflow.share unpack "$(CACHE)"
	$(SNAKEMAKE) from_cache $(FROM_CACHE) --allowed-rules $$($(PY) -c "$$FROM_CACHE_RULES")
	$(SNAKEMAKE) from_cache $(FROM_CACHE) --report results/report.html

## Rerun one model's branch (zero-shot head, logits, its metrics), then refresh aggregates and figures.
## Touches no other model's jobs. Example: make rerun-model MODEL=timm__resnet50.a1_in1k SNAKEMAKE_ARGS="--profile profiles/slurm"
SNAKEMAKE_ARGS ?= --cores $(CORES)
## Its logits (and a zero-shot model's embeddings) files are deleted first: a logits job keeps files that are still current (workflow/rules/logits.smk).
rerun-model:
	@test -n "$(MODEL)" || { echo "usage: make rerun-model MODEL=<model_id from the model registry> [SNAKEMAKE_ARGS=...]" >&2; exit 2; }
	rm -f results/logits/$(MODEL)/*.parquet results/embeddings/$(MODEL)/*.parquet
	$(SNAKEMAKE) $(SNAKEMAKE_ARGS) --forcerun build_zero_shot_head cache_logits cache_logits_imagenet_c cache_logits_zero_shot cache_logits_zero_shot_imagenet_c compute_model_metrics -- results/metrics/models/$(MODEL).parquet
	$(SNAKEMAKE) $(SNAKEMAKE_ARGS)

## Add your own model to the model registry (one validated row, study "own"); the next run computes only its branch.
## Example: make add-model MODEL=timm:resnet50 WEIGHTS=my_resnet50.safetensors GROUP=standard SOURCE=ImageNet-1k SIZE=1281167
## MODEL: timm:ARCH[.TAG], open_clip:ARCH[:TAG] or hf-hub:ORG/REPO; ARGS: further options
## (python -m clip_robustness.models.add_model --help), e.g. ARGS="--registry config/demo/models.tsv".
add-model: venv
	@test -n "$(MODEL)" -a -n "$(GROUP)" -a -n "$(SOURCE)" || { echo "usage: make add-model MODEL=<timm:ARCH[.TAG] | open_clip:ARCH[:TAG] | hf-hub:ORG/REPO> GROUP=<group> SOURCE=<training source> [SIZE=<images>] [WEIGHTS=<file>] [ARGS=...]" >&2; exit 2; }
	$(PY) -m clip_robustness.models.add_model "$(MODEL)" --group "$(GROUP)" --training-source "$(SOURCE)" \
		$(if $(SIZE),--training-size $(SIZE)) $(if $(WEIGHTS),--weights "$(WEIGHTS)") $(ARGS)

## The plan of the configured study, nothing run: jobs per rule, SLURM jobs, images, GPU-hours, disk.
## Options: PLAN_ARGS="--configfile config/demo.yaml --gpu H100" (docs/performance.md, "Plan").
PLAN_ARGS ?=
plan: venv
	$(PY) -m clip_robustness.logits.plan $(PLAN_ARGS)

## The findings' verdicts validated on simulated studies (false-supported rate, power; no GPU, ~12 min on 2 idle cores)
## -> docs/findings-validation.md and .csv. Simulation is not evidence about CLIP.
findings-check: venv
	$(PY) benchmarks/findings_check.py --workers $(CORES)

## The fault matrix of both reliability rounds (tools/faults.py): runs each fault's test on real files and runs, prints one
## line per fault (detected, message, recovered by the same command, wrong outputs left). FAULTS: all (default; the
## slurm faults need `bash tests/slurm/cluster.sh up`), fast (seconds: what CI runs of it), demo, slurm, round1, round2,
## or fault names separated by commas (`$(PY) tools/faults.py --list`).
FAULTS ?= all
faults: demo-data
	CLIP_ROBUSTNESS_DEMO_UPSTREAM=$(CURDIR)/data/demo/upstream $(PY) tools/faults.py "$(FAULTS)"

dry-run: venv
	$(SNAKEMAKE) --cores $(CORES) --dry-run --quiet rules

## The suite, on TEST_WORKERS processes (pytest-xdist; a test file stays on one worker, so its module fixtures are
## built once). The demo's upstream is built once here (demo-data) and only read by the tests.
TEST_WORKERS ?= 2
test: demo-data
	CLIP_ROBUSTNESS_DEMO_UPSTREAM=$(CURDIR)/data/demo/upstream $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## Code style is a check: ruff (Python lint and format), snakefmt (Snakemake files), snakemake --lint (workflow idioms).
lint: demo-data
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules/
	$(SNAKEMAKE) $(DEMO) --lint

clean-demo:
	rm -rf data/demo results .snakemake
