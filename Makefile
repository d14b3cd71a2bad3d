# The two commands of the README: `make demo` and `make test`. Both set up first (idempotent).
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/dcx demo --out out/demo --force

# Two workers (the machines have two cores; tests are single-threaded); a test module stays on one worker.
test: setup
	.venv/bin/python -m pytest -q -n 2 --dist loadfile
