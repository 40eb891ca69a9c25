# Two commands on a fresh machine:  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build of PyTorch (lies on this machine's disk; no multi-GB CUDA download).
# On a GPU machine:  make TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128" install
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.mirpipe-installed

.PHONY: install demo lint docs test clean-demo bench bench-cluster slurm-start slurm-stop

$(STAMP): pyproject.toml Makefile scripts/system-deps.sh demo/fetch_samples.py
	bash scripts/system-deps.sh
	@# the demo's sample library (npm registry, pinned + sha512-checked); without it the demo says so and goes on
	$(PYTHON) demo/fetch_samples.py || echo "mirpipe: going on without the sample library" >&2
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[hpc,dev,datasets,demo]"
	@# the musicnn checkpoint (ISC; a 29 MB wheel) for the opt-in `musicnn` feature kind / `instrument_embed` task
	@# and its tests: --no-deps, since its metadata asks for TensorFlow and numpy<1.17, neither of which it needs here
	$(BIN)/python -m pip install -q --no-deps "musicnn==0.1.0"
	@# muda depends on the obsolete 'pysoundfile', whose soundfile.py overwrites the
	@# real soundfile module (it then cannot find libsndfile): put soundfile's back.
	$(BIN)/python -m pip install -q --force-reinstall --no-deps "soundfile>=0.13"
	$(BIN)/python -c "import mirpipe, soundfile, muda, zarr, h5py, torch, dask_jobqueue, mirdata; print('mirpipe: environment ready (torch', torch.__version__ + ')')"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mirpipe demo

# ruff's lint rules and formatting, then mypy (its packages and the .mypy-path links: pyproject's [tool.mypy])
lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

# the generated reference pages (tests/test_docs.py fails when they are stale)
docs: $(STAMP)
	$(BIN)/python scripts/gen_config_reference.py
	$(BIN)/python scripts/gen_cli_reference.py

# lint first: a lint failure fails `make test`. Chromium (system package) for the report's browser
# test, best effort: without it that one test is skipped, saying why.
test: lint
	bash scripts/report-browser.sh || echo "mirpipe: no chromium: tests/test_report.py will be skipped" >&2
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_features.py

# sync vs LocalCluster 1/2 workers vs the local SLURM (2 worker jobs)
bench-cluster: $(STAMP) slurm-start
	$(BIN)/python benchmarks/bench_cluster.py

# a single-node SLURM on this machine (Debian packages; root or passwordless sudo)
slurm-start:
	bash scripts/slurm-local.sh start

slurm-stop:
	bash scripts/slurm-local.sh stop

clean-demo:
	rm -rf work/demo
