# Thin wrappers over scripts/: `make demo` runs the portal, `make test` runs the whole suite.
.PHONY: setup demo test check clean

PYTHON := .venv/bin/python

setup:
	scripts/setup

demo:
	scripts/demo

test:
	scripts/test $(PYTEST_ARGS)

check: setup
	VDI_ENV=demo $(PYTHON) manage.py check
	VDI_ENV=production SECRET_KEY=$$(head -c 48 /dev/urandom | base64) ALLOWED_HOSTS=example.com \
		$(PYTHON) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf var/
