# Two entry points for a fresh machine: `make demo` and `make test` (each sets up .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): setup.py $(shell find csrc -type f)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q "triton>=3.6,<3.10" "numpy>=1.24" "pillow>=9.0" "tqdm>=4.60" "safetensors>=0.4" \
		"matplotlib>=3.6" "pyyaml>=6.0" "scikit-image>=0.21" "pytest>=7" ninja \
		"onnx>=1.16" "onnxscript>=0.2" "onnxruntime>=1.17"
	$(BIN)/pip install -q --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m csd_fast demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/loss.py

clean:
	rm -rf $(VENV) build *.egg-info csd_fast/*.so
