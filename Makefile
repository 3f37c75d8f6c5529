# The two commands a new user needs:
#   make demo   set up, generate a small dataset on the embedded model (no key, no network), export it
#   make test   set up with test tools, run the whole test suite
.PHONY: setup demo test coverage bench

N ?= 20
# Test processes (pytest-xdist): one per core and one more, because about a third of the suite's time
# is spent waiting on the processes and servers it starts (on the 2-core VM, 3 took 6 min 29 s where
# 2 took 7 min 43 s). `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= $(shell echo $$(( $$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1) + 1 )))

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/datagen generate --num-instructions $(N) --run demo
	.venv/bin/datagen export --out alpaca_data.json --run demo

test:
	bash scripts/setup.sh test
	.venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# The suite under coverage, the processes it starts included (their data lands beside this file).
# Paths are absolute: Ray workers and some children run elsewhere than the repository root.
coverage:
	bash scripts/setup.sh test
	rm -rf .coverage .coverage.*
	printf '[run]\nparallel = true\npatch = subprocess\nsigterm = true\nsource = $(CURDIR)/datagen, $(CURDIR)/api, $(CURDIR)/train\ndata_file = $(CURDIR)/.coverage\n' > .coveragerc
	.venv/bin/python -m coverage run --rcfile=.coveragerc -m pytest -q -n $(TEST_WORKERS) --dist worksteal
	.venv/bin/python -m coverage combine --rcfile=.coveragerc -q
	.venv/bin/python -m coverage report --rcfile=.coveragerc --precision=2 --sort=miss

bench: setup
	.venv/bin/python bench/generate.py
	.venv/bin/python bench/dedup.py
	.venv/bin/python bench/api.py
