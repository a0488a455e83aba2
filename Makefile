# dicomvault — `make help` lists the targets. The README's two fresh-machine commands are
# `make serve` and `make test`; both create .venv/ and build every native part first.

SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
DATA ?= ./dicomvault-data
PYTEST_ARGS ?=
# Test processes for `make test` (pytest-xdist; 1 runs the suite in one process). Most tests wait
# on servers and peer tools, so 2 workers halve the wall time on 2 cores (17 -> 9.5 min measured).
# A test file stays on one worker (--dist loadfile), so its module fixtures are built once.
PYTEST_WORKERS ?= 2
NATIVE_SRC := $(shell find core/src core/kernels rust/src -type f) rust/build.rs Cargo.toml core/Cargo.toml rust/Cargo.toml pyproject.toml
STAMP := $(VENV)/.built

.DEFAULT_GOAL := help
.PHONY: help venv build serve test test-rust test-python test-full lint fmt bench bench-dimse bench-compare bench-retrieve bench-assoc bench-dicomweb bench-viewer bench-tiers bench-find bench-tls bench-ingest bench-load bench-fhir bench-replication bench-analysis clean sysdeps fuzz fuzz-python faults

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.venv-ok:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "maturin>=1.7,<2" "cython>=3.0"
	touch $@

venv: $(VENV)/.venv-ok ## create .venv with the build tools

# One build step: maturin compiles core + rust and (through rust/build.rs) the Cython kernels
# into dicomvault._native, installed editable into .venv together with the runtime and test deps.
$(STAMP): $(VENV)/.venv-ok $(NATIVE_SRC)
	$(PIP) install -q --no-build-isolation -e '.[test]'
	touch $@

build: $(STAMP) ## build all native parts and install dicomvault (editable) into .venv

# The real peers the interop tests talk to: dcmtk's SCU/SCP tools and Orthanc (Debian packages).
SYSDEPS := dcmtk orthanc orthanc-dicomweb orthanc-webviewer dicom3tools openssl curl chromium nodejs
sysdeps: ## install the Debian packages the tests use (dcmtk, Orthanc; needs root; skipped when present)
	@missing=""; for p in $(SYSDEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

serve: build ## start the archive on $(DATA) (DIMSE on 11112)
	$(VENV)/bin/dicomvault serve --data $(DATA)

test: sysdeps build test-rust test-python ## build, install the test peers, run the Rust and Python suites

test-rust: ## cargo test of the pure-Rust core
	cargo test -p dicomvault-core --release -q

test-python: build ## pytest (without the slow marker)
	$(VPY) -m pytest -q -m "not slow" --durations=25 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-full: sysdeps build test-rust ## every test, slow ones included
	$(VPY) -m pytest -q $(PYTEST_ARGS)

FUZZ_SECONDS ?= 300
FUZZ_TARGETS := dicom_parse pdu_stream conn_stream codec_decode cold_roundtrip
PYDICOM_FILES = $(CURDIR)/$(VENV)/lib/python3.11/site-packages/pydicom/data/test_files

fuzz: build ## coverage-guided fuzzing of every parser: cargo-fuzz (nightly, AddressSanitizer), then atheris; FUZZ_SECONDS per target (default 300)
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
	cd core/fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  seeds="seeds/$$t"; [ "$$t" = dicom_parse ] && seeds="$$seeds $(PYDICOM_FILES)"; \
	  cargo +nightly fuzz run $$t corpus/$$t $$seeds -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 \
	    -max_len=1048576 -print_final_stats=1 2>&1 | tee fuzz-$$t.log | grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" ; \
	  if ls artifacts/$$t/crash-* artifacts/$$t/oom-* artifacts/$$t/timeout-* >/dev/null 2>&1; then \
	    mkdir -p regressions/$$t && cp artifacts/$$t/* regressions/$$t/ && \
	    echo "fuzz: $$t found inputs that fail: copied to core/fuzz/regressions/$$t (make test replays them)"; exit 1; fi; \
	done
	$(MAKE) --no-print-directory fuzz-python

# The Python parsers of outside input (fuzz/python/targets/): atheris (libFuzzer) with coverage of
# dicomvault's own modules. An input that raises anything but the archive's typed errors, runs over
# PY_FUZZ_TIMEOUT seconds (raise it on a loaded machine) or takes 2 GB is a finding, moved to
# fuzz/python/regressions/<target>/ (make test replays them).
PY_FUZZ_TARGETS := stow_multipart stow_store qido_params media_types http_read toml_config fhir_search
PY_FUZZ_TIMEOUT ?= 1

fuzz-python: build ## coverage-guided fuzzing of the Python parsers (atheris): FUZZ_SECONDS per target
	@cd fuzz/python && failed=""; for t in $(PY_FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t artifacts/$$t scratch/$$t && \
	  TMPDIR=$(CURDIR)/fuzz/python/scratch/$$t $(CURDIR)/$(VPY) run.py $$t corpus/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(PY_FUZZ_TIMEOUT) -rss_limit_mb=2048 -max_len=262144 \
	    -artifact_prefix=artifacts/$$t/ -print_final_stats=1 2>&1 | tee fuzz-$$t.log \
	    | grep -E "(DONE|stat::number_of_executed_units|Uncaught Python exception|ERROR: libFuzzer)"; \
	  rm -rf scratch/$$t; \
	  if ls artifacts/$$t/crash-* artifacts/$$t/oom-* artifacts/$$t/timeout-* >/dev/null 2>&1; then \
	    mkdir -p regressions/$$t && mv artifacts/$$t/* regressions/$$t/ && failed="$$failed $$t"; fi; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "fuzz-python: failing inputs of$$failed moved to fuzz/python/regressions/"; exit 1; fi

# The long form of the fault-injection suite (tests/faults; `make test` runs its short form):
# FAULT_TRIALS kill -9 trials per scenario and every I/O fault variant; FAULT_SEED replays a run
# (default: a new seed each run, printed with every scenario's tally).
FAULT_TRIALS ?= 50
faults: sysdeps build ## fault injection, long form: kill -9, ENOSPC/EIO, stalled peers and object store (FAULT_TRIALS=50, ~35 min)
	FAULT_TRIALS=$(FAULT_TRIALS) FAULT_SEED=$${FAULT_SEED:-$$(date +%s)} \
	  $(VPY) -m pytest -q -m faults tests/faults $(PYTEST_ARGS)

lint: build ## cargo fmt --check, clippy -D warnings, ruff
	cargo fmt --all --check
	cargo clippy -p dicomvault-core --all-targets -- -D warnings
	PYO3_PYTHON=$(CURDIR)/$(VPY) cargo clippy -p dicomvault-python --features extension-module -- -D warnings
	$(VENV)/bin/ruff check python tests bench fuzz/python

fmt: ## format Rust and Python
	cargo fmt --all
	$(VENV)/bin/ruff format python tests bench

bench: build ## pytest-benchmark suites + end-to-end ingest vs the raw device
	$(VPY) -m pytest bench -q --benchmark-autosave --benchmark-storage=file://bench/.results $(PYTEST_ARGS)

bench-dimse: sysdeps build ## DIMSE ingest and C-FIND latency vs Orthanc, side by side (long; QUICK=1 for a short run)
	$(VPY) bench/dimse_compare.py $(if $(QUICK),--quick,)

bench-compare: sysdeps build ## dicomvault vs Orthanc vs the raw device, every headline figure -> bench/RESULTS.md (< 20 min; QUICK=1 ~1 min)
	$(VPY) bench/compare_all.py $(if $(QUICK),--quick,)

bench-retrieve: sysdeps build ## C-GET/C-MOVE retrieve and first image vs Orthanc and the no-op C-GET SCP ceiling, interleaved (~2 min; COLD=1 page cache dropped, ORTHANC_CACHE=0 Orthanc's file cache off)
	$(VPY) bench/retrieve_ceiling.py $(if $(COLD),--cold,) $(if $(ORTHANC_CACHE),--orthanc-storage-cache $(ORTHANC_CACHE),)

bench-assoc: sysdeps build ## association set-up alone: getscu's and echoscu's requests replayed against serve and Orthanc (~1 min)
	$(VPY) bench/assoc_setup.py --orthanc

bench-dicomweb: sysdeps build ## DICOMweb vs Orthanc's plugin, side by side -> bench/RESULTS.md (< 15 min; QUICK=1 < 2 min)
	$(VPY) bench/dicomweb_compare.py $(if $(QUICK),--quick,)

# A built .venv is reused as it is (the viewer is plain JS served by the editable install): timing
# the viewer never starts a native rebuild, it builds only when nothing was built yet; run
# `make build` first after native changes.
bench-viewer: sysdeps ## the browser viewer (chromium) vs the Orthanc Web Viewer plugin -> bench/RESULTS.md (~5 min; QUICK=1 ~1 min)
	@test -f $(STAMP) || $(MAKE) --no-print-directory build
	$(VPY) bench/viewer_bench.py $(if $(QUICK),--quick,)

# Like bench-viewer: a built .venv is reused as it is (build only when nothing was built yet).
bench-tiers: sysdeps ## tiered storage: landing vs inline ingest, compaction, cold tier on SeaweedFS (~4 min; QUICK=1 ~1 min)
	@test -f $(STAMP) || $(MAKE) --no-print-directory build
	$(VPY) bench/tier_bench.py $(if $(QUICK),--quick,)

bench-find: sysdeps build ## C-FIND latency at 1M instances (+ queries inside 2,000-image studies), memory (~5 min)
	$(VPY) bench/find_dv.py --index 1000000 --finds 150 --rounds 2 --ceiling

bench-fhir: build ## FHIR ImagingStudy/Patient search latency on 1,000 studies (~2 min)
	$(VPY) bench/fhir_search.py

bench-tls: sysdeps build ## DICOM TLS vs plain: ingest and C-MOVE, workers 1 and 2, and the machine's ceilings for both (~2 min)
	$(VPY) bench/tls_bench.py --slices 300 --repeats 3

bench-ingest: sysdeps build ## DIMSE ingest (4 x storescu) against storescp --fork --ignore (no-op), storescp --fork -od (writes files) and Orthanc in the same run, /dev/shm and disk, workers 1 and 2 (~4 min)
	$(VPY) bench/ingest_ceiling.py --slices 400 --rounds 3

bench-load: build ## 32/64/128 concurrent associations against serve's default limits: throughput, p99, RSS, refusals, lost -> bench/RESULTS.md (~5 min; QUICK=1 < 1 min)
	$(VPY) bench/load_bench.py $(if $(QUICK),--quick)

bench-analysis: sysdeps build ## analysis on ingest: ingest rate with analysis off and on (same run), analysis time per 300-slice CT per analyzer (~3 min; QUICK=1 < 1 min)
	$(VPY) bench/analysis_bench.py --phantom $(if $(QUICK),--quick,)

bench-replication: build ## replication RPO, catch-up, backup and restore speed
	$(VPY) bench/replication.py

clean: ## remove build outputs (keeps .venv and data)
	cargo clean
	rm -f $(STAMP) python/dicomvault/*.so
