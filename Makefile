# vigil: make run | make test | make lint | make bench | make check | make fuzz
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: building pysctp (no wheel on a Pi) ...
BUILD_DEBS := libsctp-dev python3-dev gcc
# ... and what the tests drive: modprobe (also in the User-Mode Linux guest, whose
# kernel `make uml-kernel` fetches), an independent SCTP peer, network namespaces
# and packet loss, a real browser with a Chinese font (the zh-CN panel), curl,
# systemd-analyze (the unit files), Prometheus and its promtool (GET /metrics), and the
# systemd VMs (`make vm-image`): mmdebstrap, mkfs.ext4 -d, qemu for x86-64 and for arm64
# (whose image's maintainer scripts run through qemu-user-static).
TEST_DEBS := $(BUILD_DEBS) kmod lksctp-tools iproute2 nftables chromium chromium-driver curl \
	fonts-wqy-microhei procps systemd python3-venv mosquitto mosquitto-clients prometheus \
	mmdebstrap e2fsprogs qemu-system-x86 qemu-system-arm qemu-user-static
BENCH_DEBS := wrk util-linux iproute2 nftables strace kmod mosquitto

.PHONY: run test test-arm64 lint check bench fuzz deps test-deps uml-kernel ha vm-image clean

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
	@$(PYTHON) -m tests.uml.kernel

# Home Assistant 2024.1.6 for tests/test_homeassistant.py, in a venv of its own cached
# outside the checkout (tests/ha/harness.py: installed once, then reused); says which one.
ha: $(STAMP)
	@$(PY) -m tests.ha.harness

# The Debian 12 VM with a real systemd for tests/test_systemd_vm.py (its own kernel, built
# by mmdebstrap) and the wheels its pip installs from, cached outside the checkout
# (tests/vm/image.py: built once, then reused); says which in one line each.
vm-image: test-deps
	@$(PY) -m tests.vm.image

# vigil installed on arm64 Debian 12 under emulation (tests/test_arm64_vm.py) is too slow
# for every run: it runs when the Makefile, pyproject.toml or dist/ changed since the run
# tests/vm/arm64.verified records (commit that file with them) and says either way (-rs);
# `make test-arm64` runs it alone, VIGIL_VM_ARM64=always even when nothing changed.
test: test-deps uml-kernel ha vm-image
	$(PY) -m pytest -q -rs tests --ignore=tests/sctp
	tests/run_sctp_tests.sh $(PY)

test-arm64: test-deps
	$(PY) -m pytest -q -rs tests/test_arm64_vm.py

lint: $(STAMP)
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy server
	$(VENV)/bin/lint-imports --no-cache

check: lint test

# Property-based fuzzing of the request path (tests/test_fuzz.py; every `make test` runs
# a short, fixed-seed profile): the long profile, a new seed each run, printed with a
# failure; VIGIL_FUZZ_SEED=N repeats one.
fuzz: $(STAMP)
	VIGIL_FUZZ=long $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py

bench: $(STAMP)
	@tools/ensure-debs.sh $(BENCH_DEBS)
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# -- vigil as a system service: make install | make uninstall [PURGE=1] (as root) ----------
# DESTDIR: install into a staging root (packagers, tests): no users are made and nothing
# is started or reloaded. Code and its own venv in $(LIBDIR), the command `vigil` in
# $(BINDIR), units in $(UNITDIR), config in $(SYSCONFDIR) (never overwritten), state in
# $(STATEDIR). uninstall keeps config, state and the users unless PURGE=1. The venv is
# the system's Python's (a service cannot use one in a home directory: ProtectHome).
INSTALL_PYTHON ?= /usr/bin/python3
INSTALL_DEBS := $(BUILD_DEBS) python3-venv
PREFIX ?= /usr/local
LIBDIR := $(PREFIX)/lib/vigil
BINDIR := $(PREFIX)/bin
SYSCONFDIR := /etc/vigil
STATEDIR := /var/lib/vigil
UNITDIR := /etc/systemd/system
MODULESDIR := /etc/modules-load.d
SUBST := sed -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
AS_ROOT_VIGIL := $(if $(DESTDIR),,-o root -g vigil)
AS_VIGIL := $(if $(DESTDIR),,-o vigil -g vigil)
IVENV := $(DESTDIR)$(LIBDIR)/venv

.PHONY: install uninstall

install:
	@tools/ensure-debs.sh $(INSTALL_DEBS)
	rm -rf $(DESTDIR)$(LIBDIR)
	$(INSTALL_PYTHON) -m venv $(IVENV)
	$(IVENV)/bin/python -m pip install -q --no-compile $(CURDIR)
	$(IVENV)/bin/python -m compileall -q -f $(if $(DESTDIR),-s $(DESTDIR) -p /) $(IVENV)/lib
	$(if $(DESTDIR),grep -rlF '$(DESTDIR)' $(IVENV)/bin $(IVENV)/pyvenv.cfg \
		| xargs -r sed -i 's|$(DESTDIR)||g')
	cd static && find . -type f -exec install -D -m 0644 {} $(DESTDIR)$(LIBDIR)/static/{} \;
	install -m 0644 README.md README.zh-CN.md dist/agents/gpio-example.toml $(DESTDIR)$(LIBDIR)/
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(MODULESDIR)
	$(SUBST) dist/vigil.in > $(DESTDIR)$(BINDIR)/vigil && chmod 0755 $(DESTDIR)$(BINDIR)/vigil
	for unit in vigil.service vigil-agent@.service; do \
		$(SUBST) dist/systemd/$$unit.in > $(DESTDIR)$(UNITDIR)/$$unit && \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$$unit || exit 1; done
	install -m 0644 dist/modules-load.conf $(DESTDIR)$(MODULESDIR)/vigil.conf
	$(if $(DESTDIR),,getent passwd vigil >/dev/null || useradd --system --user-group \
		--home-dir $(STATEDIR) --no-create-home --shell /usr/sbin/nologin vigil)
	$(if $(DESTDIR),,getent passwd vigil-agent >/dev/null || useradd --system --user-group \
		--home-dir / --no-create-home --shell /usr/sbin/nologin vigil-agent)
	$(if $(DESTDIR),,! getent group gpio >/dev/null || usermod -a -G gpio vigil-agent)
	install -d -m 0751 $(AS_ROOT_VIGIL) $(DESTDIR)$(SYSCONFDIR)
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/agents
	test -e $(DESTDIR)$(SYSCONFDIR)/config.toml || { \
		sed -e 's|^static_dir = "static" |static_dir = "$(LIBDIR)/static"|' \
		    -e 's|^path = "var/audit.jsonl" |path = "audit.jsonl"|' \
		    -e 's|^dir = "\." |dir = "$(STATEDIR)"|' config.toml > $(DESTDIR)$(SYSCONFDIR)/.new && \
		install -m 0640 $(AS_ROOT_VIGIL) $(DESTDIR)$(SYSCONFDIR)/.new \
		    $(DESTDIR)$(SYSCONFDIR)/config.toml && rm $(DESTDIR)$(SYSCONFDIR)/.new; }
	install -d -m 0750 $(AS_VIGIL) $(DESTDIR)$(STATEDIR)
	$(if $(DESTDIR),,systemctl daemon-reload && systemctl try-restart vigil)
	$(if $(DESTDIR),,modprobe sctp || echo "vigil: no SCTP in this kernel: no device agents")
	@echo "vigil: installed. Next: sudo vigil user add NAME; sudo systemctl enable --now vigil"

uninstall:
	$(if $(DESTDIR),,systemctl disable --now vigil || true)
	$(if $(DESTDIR),,systemctl stop 'vigil-agent@*' || true)
	rm -rf $(DESTDIR)$(LIBDIR)
	rm -f $(DESTDIR)$(BINDIR)/vigil $(DESTDIR)$(MODULESDIR)/vigil.conf \
		$(DESTDIR)$(UNITDIR)/vigil.service $(DESTDIR)$(UNITDIR)/vigil-agent@.service \
		$(DESTDIR)$(UNITDIR)/*.wants/vigil-agent@*.service
	$(if $(PURGE),rm -rf $(DESTDIR)$(SYSCONFDIR) $(DESTDIR)$(STATEDIR))
	$(if $(DESTDIR)$(if $(PURGE),,x),,userdel vigil; userdel vigil-agent; true)
	$(if $(DESTDIR),,systemctl daemon-reload)
