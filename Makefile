# affect: extract once, train many heads.
# `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AFFECT := $(VENV)/bin/affect
STAMP := $(VENV)/.installed

DATASET ?= react
DATA ?= data/$(DATASET)
STORE ?= store/$(DATASET).zarr
ENCODERS ?=
WEIGHTS ?= default
DEVICE ?= auto
HEAD ?= regnn
RUN ?= runs/$(HEAD)
PYTEST_ARGS ?=

.PHONY: lock setup test test-quick test-all lint demo extract ingest train eval bench clean

setup: $(STAMP)

$(STAMP): setup.cfg constraints.txt constraints.lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	# MTCNN face crops (hsemotion face_crop=mtcnn): its metadata pins torch<2.3, numpy<2 and
	# Pillow<10.3, older than our stack, which its code runs on: installed without them
	$(PY) -m pip install -q --no-deps -c constraints.txt facenet-pytorch
	touch $(STAMP)

# Re-resolve the whole stack from setup.cfg and the policy pins in constraints.txt alone, and
# write every version into constraints.lock.txt for `make setup` to install as-is (network,
# ~1 min). uv resolves (pip's backtracking ran past its depth limit on this graph); the lock is
# for Linux x86_64, Python 3.11, the platform CI and the tests run on.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q uv
	grep -v '^-c ' constraints.txt > $(LOCK_VENV)/policy.txt
	$(LOCK_VENV)/bin/uv pip compile setup.cfg --extra test --extra interop \
		-c $(LOCK_VENV)/policy.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--no-header --no-annotate -q -o $(LOCK_VENV)/resolved.txt
	{ grep '^#' constraints.lock.txt; cat $(LOCK_VENV)/resolved.txt; } > constraints.lock.txt.new
	mv constraints.lock.txt.new constraints.lock.txt && rm -rf $(LOCK_VENV)

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Under 3 minutes on 2 cores: the store, one encoder through extraction, the shared trainer
# with one head, and the CLI, less their multi-process tests. `make test` before you push.
QUICK_TESTS := tests/test_store.py tests/test_store_cli.py tests/test_extract.py \
	tests/test_trainer.py
QUICK_LEAVES_OUT := killed_run or spawned_dataloader or four_processes or installed_affect

test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -k "not ($(QUICK_LEAVES_OUT))" $(QUICK_TESTS) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

demo: $(STAMP)
	$(AFFECT) demo --out demo

ingest: $(STAMP)
	$(AFFECT) ingest --dataset $(DATASET) --data-root $(DATA) --store $(STORE)

extract: $(STAMP)
	$(AFFECT) extract --dataset $(DATASET) --data-root $(DATA) --store $(STORE) \
		$(if $(ENCODERS),--encoders $(ENCODERS)) --weights $(WEIGHTS) --device $(DEVICE)

train: $(STAMP)
	$(AFFECT) train --head $(HEAD) $(if $(filter command line,$(origin STORE)),--store $(STORE),$(if $(filter command line,$(origin DATASET)),--store $(STORE))) --out $(RUN)

eval: $(STAMP)
	$(AFFECT) evaluate --run $(RUN)

bench: $(STAMP)
	$(PY) bench/store_read.py
	$(PY) bench/extract.py
	$(PY) bench/react_metrics.py
	$(PY) bench/train.py

clean:
	rm -rf demo runs store .pytest_cache
