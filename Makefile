# `make demo` and `make test` work on a fresh machine: they create .venv themselves.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO_DB ?= .opmap-demo/catalog.db

.PHONY: demo test fuzz venv census bench-build bench-choice bench-speed bench-compare bench-timm coverage measurements clean fuzz-archives

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first, pinned: the CPU build on this machine's local index (any other release is a CUDA download).
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	mkdir -p .opmap-demo
	$(PY) examples/detector.py examples/detector.pt2
	$(VENV)/bin/opmap --db $(DEMO_DB) suggest examples/detector.pt2 -r --html .opmap-demo/detector-plan.html
	$(VENV)/bin/opmap --db $(DEMO_DB) build examples/detector.pt2 -o .opmap-demo/detector.engine
	$(VENV)/bin/opmap --db $(DEMO_DB) verify examples/detector.pt2
	# a BERT exported by keyword with dynamic batch (1..32) and sequence (2..128): one engine, verified at min, opt and max
	$(PY) examples/dynamic.py examples bert_dynamic
	$(VENV)/bin/opmap --db $(DEMO_DB) build examples/bert_dynamic.pt2 -o .opmap-demo/bert_dynamic.engine
	$(VENV)/bin/opmap --db $(DEMO_DB) verify examples/bert_dynamic.pt2

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# Differential fuzzing of every strategy over its argument space (bench/FUZZ.md); FUZZ_ARGS="--cases 30 --seed 1",
# "--only norm/group-norm", "--budget 1800" (seconds).
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(PY) bench/fuzz.py $(FUZZ_ARGS)

census: $(STAMP)
	$(PY) bench/census.py

# Every zoo architecture x (positional, keyword) x (static, dynamic), built and verified (bench/BUILD.md).
# ZOO_ARGS="--quick" for three models, "--only bert,llama", "--jobs 2", "--budget 1500" (seconds; the rest: not run).
ZOO_ARGS ?=
bench-build: $(STAMP)
	$(PY) bench/build_zoo.py $(ZOO_ARGS)

# ~30 timm image models (CNNs, ViTs, hybrids) x (static, dynamic batch), built and verified (bench/TIMM.md).
# TIMM_ARGS="--only resnet18,vit_tiny_patch16_224", "--variants static", "--budget 900" (seconds; the rest: not run).
TIMM_ARGS ?=
bench-timm: $(STAMP)
	$(PY) bench/timm_zoo.py $(TIMM_ARGS)

# opmap vs the ONNX route on every zoo model and the detector (bench/COMPARE.md); QUICK=1 for four models.
bench-compare: $(STAMP)
	$(PY) bench/compare.py $(if $(QUICK),--quick) $(if $(BUDGET),--budget $(BUDGET))

# Reliability under fuzzing (bench/FUZZ_ARCHIVES.md): 1,000 damaged archives, 500 expressions and options, input and
# rule files, in-process, plus a sample as real processes; FUZZ_ARGS="--seed 7" or "--only archive:17".
FUZZ_ARGS ?=
fuzz-archives: $(STAMP)
	$(PY) bench/fuzz_archives.py $(FUZZ_ARGS)

bench-choice: $(STAMP)
	$(PY) bench/choice.py

# Whole-process suggest against a bare torch.export.load, and planning per node, 20 to 10,000 nodes (bench/SPEED.md).
bench-speed: $(STAMP)
	$(PY) bench/speed.py

# bench/COVERAGE.md: Core ATen, Torch-TensorRT's converter list and the catalog, proven by the conformance machinery
# (results cached per strategy source and example, so a rerun only redoes what changed).
coverage: $(STAMP)
	$(PY) bench/coverage.py

# Regenerate the measurements shipped with the catalog: every built-in strategy on its own examples and at the
# node sizes of the detector and three zoo models (the census buckets), on tensorrt_rtx.
measurements: $(STAMP)
	$(PY) bench/measure_shipped.py

clean:
	rm -rf $(VENV) .opmap-demo examples/detector.pt2 *.egg-info
