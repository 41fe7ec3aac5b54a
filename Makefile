# One-command set-up; every target is idempotent (a second run only checks the stamp).
#   make demo   set up, then train + evaluate Panoptic FPN on the built-in data (prints mask AP and PQ)
#   make test   set up, then run the test suite, then Detectron2 v0.6's own (tools/run_detectron2_tests.py)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.seg_d2-setup
SETUP_INPUTS := requirements/pinned.txt requirements/no-deps.txt requirements/detectron2.txt \
                tools/install_detectron2.py setup.py seg_d2/evaluation/_png_ids.c

.PHONY: setup demo test bench clean
setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/pinned.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/no-deps.txt
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -c "import seg_d2, detectron2.layers; print('seg_d2 ready')"
	touch $(STAMP)

demo: setup
	$(PY) tools/train_net.py --config-file configs/builtin/panoptic_fpn_regnetx002_demo.yaml
	@$(PY) bench/bench_speed_vs_stock.py --only gflops 2>/dev/null | tail -1  # the yardstick to scale times by

test: setup
	$(PY) -m pytest -q tests
	$(PY) tools/run_detectron2_tests.py

bench: setup
	for script in $(filter-out bench/bench_common.py,$(wildcard bench/bench_*.py)); do $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) .cache output
