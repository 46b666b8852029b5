# vigil: make run | make test | make lint | make bench | make check
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: building pysctp (no wheel on a Pi) ...
BUILD_DEBS := libsctp-dev python3-dev gcc
# ... and what the tests drive: modprobe (also in the User-Mode Linux guest, whose
# kernel `make uml-kernel` fetches), an independent SCTP peer, network namespaces
# and packet loss, a real browser, curl.
TEST_DEBS := $(BUILD_DEBS) kmod lksctp-tools iproute2 nftables chromium chromium-driver curl \
	procps mosquitto mosquitto-clients
BENCH_DEBS := wrk util-linux iproute2 nftables strace kmod mosquitto

.PHONY: run test lint check bench deps test-deps uml-kernel clean

run: $(STAMP)
	$(PY) -m server --config config.toml

$(STAMP): pyproject.toml
	@tools/ensure-debs.sh $(BUILD_DEBS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev,bench]'
	touch $@

deps: $(STAMP)

test-deps: $(STAMP)
	@tools/ensure-debs.sh $(TEST_DEBS)

# The SCTP test kernel: Debian testing's User-Mode Linux, cached outside the
# checkout (tests/uml/kernel.py); says which one in one line.
uml-kernel:
	@$(PYTHON) tests/uml/kernel.py

test: test-deps uml-kernel
	$(PY) -m pytest -q tests --ignore=tests/sctp
	tests/run_sctp_tests.sh $(PY)

lint: $(STAMP)
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy server

check: lint test

bench: $(STAMP)
	@tools/ensure-debs.sh $(BENCH_DEBS)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
