# Thin wrappers over scripts/: `make demo` runs the portal, `make test` runs the whole suite,
# `make bench` the benchmarks (docs/benchmarks.md).
.PHONY: setup demo test check bench clean

PYTHON := .venv/bin/python

setup:
	scripts/setup

demo:
	scripts/demo

test:
	scripts/test $(PYTEST_ARGS)

bench:
	bench/run $(BENCHES)

check: setup
	VDI_ENV=demo $(PYTHON) manage.py check
	VDI_ENV=production SECRET_KEY=$$(head -c 48 /dev/urandom | base64) ALLOWED_HOSTS=example.com \
		$(PYTHON) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf var/
