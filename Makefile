# Every target creates / reuses the local venv (.venv) with plain pip, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: venv test demo parity parity-gpu clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

venv: $(VENV)/.installed

## test: the whole test suite (what CI runs)
test: venv
	$(PY) -m pytest

## demo: the main job (parity of the MindSpore ResNet50 with torchvision, GRAPH and PYNATIVE)
demo: venv
	$(PY) -m parity --arch resnet50 --mode both

parity: demo

## parity-gpu: the same on a GPU machine
parity-gpu: venv
	$(PY) -m parity --arch resnet50 --mode both --device GPU

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
