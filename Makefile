# `make run` and `make test` bootstrap what they need, idempotently.
#
# Both (the `setup` target): a virtualenv in .venv with the gateway, honcho,
# the test tools and the Python bridge; the NSQ binaries in .tools/bin, built
# with Go from tools/nsq unless nsqd, nsqlookupd and nsqadmin are already on
# PATH; the npm packages locked in package-lock.json in node_modules
# (centrifuge-js for the demo page and the SDK test, playwright-core for the
# browser tests, ws for the clients under Node, and the stock Action Cable
# clients for the /cable tests).
# So `make run` needs Python 3.11+, make, Go and Node.js 20+ with npm; it
# installs nothing outside this directory (Go and npm keep their download
# caches where they always do).
#
# `make test` also needs, and installs with apt-get when they are missing,
# Debian's Ruby packages for the Rails bridge's tests (the `ruby` target) and
# chromium for the browser test (the `chromium` target), and builds the
# stock-SDK harnesses of tests/test_sdks.py into .tools/sdk (the
# `sdk-harnesses` target: centrifuge-java with Maven, centrifuge-go).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := .tools/bin
NSQ_APPS := nsqd nsqlookupd nsqadmin nsq_tail
ORIG_PATH := $(PATH)
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all help setup run test typecheck test-python test-fast test-ruby bench bench-million soak clean

all: setup

# `make help` lists the targets that carry a `## ` description on their rule.
help: ## List these targets
	@echo "make TARGET, where TARGET is one of:"
	@awk 'BEGIN { FS = ":[^#]*## " } /^[a-z-]+:[^#]*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

# Setup says one line for each thing it installs, and nothing once all is in
# place. A step's full output goes to .tools/logs/, printed when it fails.
LOGS := .tools/logs

setup: versions $(VENV)/.installed nsq node_modules/.installed ## Install what run and test need, inside the checkout (.venv, .tools, node_modules)

# The version is written in one place: VERSION. The gateway's setup.cfg reads
# it; the bridges, which build on their own (pip install ./bridges/python, a
# copy of bridges/rails, Bundler's git checkout), carry it in a file written
# from it here: change VERSION, run make, commit what changed.
# tests/test_packaging.py checks every built package against VERSION.
VERSION_FILES := bridges/python/pushgate_bridge/_version.py bridges/rails/lib/pushgate/version.rb
VERSION_NOTE := Written by make from VERSION at the root of the repository, the one place\n\# the version is written: do not edit.
.PHONY: versions
versions: $(VERSION_FILES) ## Write VERSION into the bridges' version files
bridges/python/pushgate_bridge/_version.py: VERSION
	@printf '# $(VERSION_NOTE)\n__version__ = "%s"\n' "$$(cat VERSION)" > $@
bridges/rails/lib/pushgate/version.rb: VERSION
	@printf '# frozen_string_literal: true\n\n# $(VERSION_NOTE)\nmodule Pushgate\n  VERSION = "%s"\nend\n' "$$(cat VERSION)" > $@

# The Ruby bridge's tests run on Debian's Ruby packages (no RubyGems, no Bundler);
# ruby-rails for the /cable tests' Rails 6.1 app (tests/ruby/rails_app);
# ruby-bundler for tests/test_packaging.py (the gem from git, as the README shows).
RUBY_PACKAGES := ruby ruby-minitest ruby-actioncable ruby-activerecord ruby-sqlite3 ruby-rails ruby-bundler
RUBY_CHECK := require "minitest"; require "active_support/all"; require "action_cable"; require "active_record"; require "sqlite3"; require "rails"; require "bundler"
.PHONY: ruby
ruby: ## Install Debian's Ruby packages for the Rails bridge's tests (apt-get)
	@if ruby -e '$(RUBY_CHECK)' >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null; then \
		echo "ruby: installing Debian packages: $(RUBY_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(RUBY_PACKAGES) >/dev/null; \
	else \
		echo "ruby: install Ruby >= 3.0 with minitest, actioncable, activerecord and sqlite3"; exit 1; \
	fi

# npm packages, exactly as locked in package-lock.json. Needs Node.js 20+ and npm.
node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null && node -e 'process.exit(parseInt(process.versions.node) < 20 ? 1 : 0)' \
		|| { echo "node: install Node.js 20 or later, with npm"; exit 1; }
	@echo "setup: npm packages into node_modules (npm ci, as locked in package-lock.json)"
	@mkdir -p $(LOGS)
	@npm ci --no-audit --no-fund > $(LOGS)/npm-ci.log 2>&1 || { cat $(LOGS)/npm-ci.log; exit 1; }
	@touch $@

# The browser test drives Debian's chromium (with playwright-core from npm;
# Playwright's own browser downloads are never used). Without it, that test
# is skipped and says so.
.PHONY: chromium
chromium: ## Install Debian's chromium for the browser tests (apt-get)
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		echo "chromium: installing Debian's chromium for the browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
			|| echo "chromium: COULD NOT BE INSTALLED: the browser test will be skipped"; \
	else \
		echo "chromium: not found and no apt-get: the browser test will be skipped"; \
	fi

# The stock-SDK harnesses of tests/test_sdks.py (tests/sdk/), built into
# .tools/sdk. The JS one runs on node_modules and the Python one on the
# virtualenv; Java and Go are built here. First the downloads (what cannot be
# had: the SDK's test is skipped, with the reason written to
# .tools/sdk/NAME.unavailable and shown by pytest -rs), then an offline build
# (a build error is ours and fails `make`).
SDK_BUILD := .tools/sdk
# Maven's output goes to a log (printed when a step fails): Debian's Maven 3.8
# writes stray colour codes even in batch mode.
MVN_LOG := $(SDK_BUILD)/java-build.log
MVN := mvn -B -ntp -l $(CURDIR)/$(MVN_LOG)
JAVA_HARNESS := tests/sdk/java/pom.xml $(shell find tests/sdk/java/src -name '*.java')
GO_HARNESS := tests/sdk/go/go.mod tests/sdk/go/go.sum tests/sdk/go/main.go
.PHONY: sdk-harnesses sdk-java sdk-go
sdk-harnesses: sdk-java sdk-go ## Build the stock-SDK harnesses of tests/test_sdks.py into .tools/sdk

# $(call sdk_unavailable,NAME,REASON): record and announce why an SDK test will be skipped.
sdk_unavailable = { mkdir -p $(SDK_BUILD); echo "$(2)" > $(SDK_BUILD)/$(1).unavailable; \
	echo "sdk-$(1): $(2). ITS SDK TEST WILL BE SKIPPED."; }

# centrifuge-java needs a JDK 17+ and Maven: Debian's, when they are missing.
HAVE_JDK := command -v mvn >/dev/null && command -v javac >/dev/null \
	&& [ "$$(javac -version 2>&1 | sed -nE 's/^javac ([0-9]+).*/\1/p')" -ge 17 ]
sdk-java:
	@if ! { $(HAVE_JDK); } && command -v apt-get >/dev/null; then \
		echo "sdk-java: installing Debian's maven and default-jdk-headless for the centrifuge-java test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			$$SUDO apt-get install -y -qq maven default-jdk-headless >/dev/null || true; \
	fi; \
	if $(HAVE_JDK); then \
		$(MAKE) -s --no-print-directory $(SDK_BUILD)/java/harness.jar; \
	else \
		$(call sdk_unavailable,java,Maven and a JDK 17 or later are needed and could not be installed); \
	fi

$(SDK_BUILD)/java/harness.jar: $(JAVA_HARNESS)
	@mkdir -p $(SDK_BUILD)
	@echo "sdk-java: fetching centrifuge-java 0.4.1 and the build's Maven plugins (into ~/.m2; log: $(MVN_LOG))"
	@cd tests/sdk/java && if $(MVN) dependency:go-offline >/dev/null 2>&1; then \
		echo "sdk-java: building $@"; \
		$(MVN) -o package >/dev/null 2>&1 || { tail -n 40 $(CURDIR)/$(MVN_LOG); exit 1; }; \
		touch $(CURDIR)/$@ && rm -f $(CURDIR)/$(SDK_BUILD)/java.unavailable; \
	else \
		tail -n 20 $(CURDIR)/$(MVN_LOG); \
		cd $(CURDIR) && $(call sdk_unavailable,java,Maven could not download centrifuge-java or its plugins); \
	fi

# centrifuge-go: Go is part of `make run`'s contract, but its go.mod asks for Go 1.25.
sdk-go:
	@if command -v go >/dev/null; then \
		$(MAKE) -s --no-print-directory $(SDK_BUILD)/go/harness; \
	else \
		$(call sdk_unavailable,go,Go is not installed); \
	fi

$(SDK_BUILD)/go/harness: $(GO_HARNESS)
	@echo "sdk-go: fetching centrifuge-go v0.12.1 and its modules (into $$(go env GOMODCACHE))"
	@cd tests/sdk/go && if go mod download; then \
		echo "sdk-go: building $@" && go build -o $(CURDIR)/$@ . \
			&& rm -f $(CURDIR)/$(SDK_BUILD)/go.unavailable; \
	else \
		cd $(CURDIR) && $(call sdk_unavailable,go,The Go modules of tests/sdk/go could not be downloaded (or Go is older than 1.25)); \
	fi

# The gateway (with honcho for `make run` and the test tools), and the Python
# bridge, its own distribution, which the demo backend and the tests import.
# setuptools tells of every editable install with a warning ("Editable
# installation... Please be careful with folders in your working directory"),
# which pip shows even with --quiet: that notice alone is ignored here.
PIP := $(VENV)/bin/python -W 'ignore:Editable installation:UserWarning' -m pip
$(VENV)/.installed: setup.cfg pyproject.toml VERSION bridges/python/setup.cfg bridges/python/pyproject.toml \
		bridges/python/pushgate_bridge/_version.py
	@echo "setup: a virtualenv in $(VENV) with the gateway, honcho, the test tools and the Python bridge"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --quiet -e '.[dev,test]' -e ./bridges/python
	@touch $@

# Use nsqd from PATH when there is one; otherwise build NSQ v1.3.0 with Go.
.PHONY: nsq
nsq:
	@if [ ! -x $(BIN)/nsqd ] && PATH="$(ORIG_PATH)" command -v nsqd >/dev/null \
			&& PATH="$(ORIG_PATH)" command -v nsqlookupd >/dev/null \
			&& PATH="$(ORIG_PATH)" command -v nsqadmin >/dev/null; then \
		echo "nsq: using $$(PATH="$(ORIG_PATH)" command -v nsqd)"; \
	else \
		$(MAKE) -s --no-print-directory $(addprefix $(BIN)/,$(NSQ_APPS)); \
	fi

$(addprefix $(BIN)/,$(NSQ_APPS)) &: tools/nsq/go.mod tools/nsq/go.sum
	@command -v go >/dev/null || { echo "nsq: Go is needed to build nsqd (or put nsqd and nsqlookupd on PATH)"; exit 1; }
	@echo "setup: NSQ v1.3.0 ($(NSQ_APPS)) into $(BIN), built with Go from tools/nsq"
	@mkdir -p $(LOGS)
	@cd tools/nsq && go build -o $(CURDIR)/$(BIN)/ $(addprefix github.com/nsqio/nsq/apps/,$(NSQ_APPS)) \
		> $(CURDIR)/$(LOGS)/nsq-build.log 2>&1 || { cat $(CURDIR)/$(LOGS)/nsq-build.log; exit 1; }

# Ports and nsqd's data directory can be moved with the variables Procfile.dev
# names (PUSHGATE_PORT, DEMO_PORT, NSQD_HTTP_PORT, ...).
run: setup ## The whole stack on 127.0.0.1 with the demo page (Ctrl-C stops it)
	@mkdir -p "$${NSQD_DATA_PATH:-var/nsqd}"
	@echo
	@echo "  pushgate is starting. Open the demo in your browser:"
	@echo
	@echo "    http://127.0.0.1:$${DEMO_PORT:-8080}    (log in as alice in one window and bob in another)"
	@echo
	@echo "  and the status page, with the last hour's charts (any user name, password $${PUSHGATE_API_KEY:-dev-api-key}):"
	@echo
	@echo "    http://127.0.0.1:$${PUSHGATE_PORT:-8000}/admin"
	@echo
	@echo "  Everything listens on 127.0.0.1 only: gateway http://127.0.0.1:$${PUSHGATE_PORT:-8000},"
	@echo "  nsqd 127.0.0.1:$${NSQD_TCP_PORT:-4150}/$${NSQD_HTTP_PORT:-4151}, nsqlookupd 127.0.0.1:$${NSQLOOKUPD_TCP_PORT:-4160}/$${NSQLOOKUPD_HTTP_PORT:-4161}, nsqadmin http://127.0.0.1:$${NSQADMIN_PORT:-4171}."
	@echo "  The demo publisher sends to channel 'demo' every 3 s. To see messages arrive in a terminal, run:"
	@echo "    $(VENV)/bin/python examples/watch.py demo"
	@echo "  and publish your own:"
	@echo "    curl -d '{\"channel\":\"demo\",\"data\":{\"hello\":1}}' 'http://127.0.0.1:$${NSQD_HTTP_PORT:-4151}/pub?topic=pushgate'"
	@echo "  Ctrl-C stops everything."
	@echo
	@# Ctrl-C is how it ends: honcho's 130 for SIGINT is a clean stop, not an error.
	@$(VENV)/bin/honcho -f Procfile.dev start || [ $$? = 130 ]

test: setup ruby chromium sdk-harnesses ## The whole suite, as CI runs it (installs Ruby and Chromium with apt-get when missing)
	@$(MAKE) --no-print-directory typecheck test-python test-ruby

# mypy over gateway/ and auth/, as configured in setup.cfg's [mypy] section.
# Silent when clean; otherwise every error, and the target fails.
typecheck: $(VENV)/.installed ## mypy over gateway/ and auth/ (part of make test)
	@out=$$($(VENV)/bin/python -m mypy 2>&1) || { echo "$$out"; exit 1; }

# PYTEST_ARGS picks tests: a file, a test (file::name), -k EXPRESSION, -x ...
# PYTEST_JOBS: how many pytest processes (pytest-xdist) share the tests, a file
# each at a time (2 by default: most of the suite waits on real processes, so
# two of them fit 2 cores; PYTEST_JOBS=0 runs in this process alone).
PYTEST_JOBS ?= 2
test-python: setup ## The Python tests, or some: PYTEST_ARGS='tests/test_cli.py -k suggest'
	$(VENV)/bin/python -m pytest -q -rs $(if $(filter-out 0,$(PYTEST_JOBS)),-n $(PYTEST_JOBS) --dist loadfile) $(PYTEST_ARGS)

# The in-process tests alone, in seconds: pure logic and the session core, no
# nsqd, no subprocess, no browser. tests/conftest.py marks them `inprocess`
# (every test without the stack fixtures or a `process` mark, and one of them
# that starts a process fails). No test selected is a failure, not a pass.
test-fast: $(VENV)/.installed ## The in-process tests alone, in seconds (PYTEST_ARGS too)
	@$(VENV)/bin/python -m pytest -q -m inprocess $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "test-fast: no in-process test was selected (see tests/conftest.py)"; fi; \
	exit $$rc

test-ruby: ## The Rails bridge's tests (Debian's Ruby: make ruby)
	cd bridges/rails && ruby -Ilib -Itest -e 'Dir["test/**/*_test.rb"].sort.each { |f| require File.expand_path(f) }'

# The benchmark suite: every figure beside the physical limit, measured in the
# same run, into a dated report in bench/results/ (bench/suite.py). Needs a C
# compiler for the load client and the limit server (bench/*.c) and matplotlib
# for the plot. Takes about 15 minutes; BENCH_ARGS passes options (--quick,
# --clients N, --hold 0 ...).
bench: setup ## The benchmark suite, about 15 minutes, into bench/results/ (BENCH_ARGS)
	@$(PIP) install --quiet -e '.[bench]'
	@command -v cc >/dev/null || { echo "bench: a C compiler (cc) is needed for bench/loadgen.c"; exit 1; }
	$(VENV)/bin/python bench/suite.py $(BENCH_ARGS)

bench-million: setup ## A million WebSocket connections on this box (bench/million.py, MILLION_ARGS), into bench/results/
	@command -v cc >/dev/null || { echo "bench-million: a C compiler (cc) is needed for bench/loadgen.c"; exit 1; }
	$(VENV)/bin/python bench/million.py $(MILLION_ARGS)

# The soak with faults (bench/soak.py): MINUTES (30) of steady honest load
# (stock SDK clients) on two boxes of two workers behind a relay, with faults
# injected at random (kills, stops, nsqd restarts, network cuts, floods,
# bursts); one line per invariant, a report in bench/results/soak-<date>.md
# with an RSS curve (matplotlib, from the bench extra); exit 1 on any breach.
# SOAK_ARGS passes options (--seed N to repeat a run, --faults KINDS, ...).
# `make test` runs the lean one (bench/soak.py --lean: every fault kind once, about 2 minutes).
MINUTES ?= 30
soak: setup ## The soak with faults: MINUTES=30 of honest load and random faults, invariants checked
	@$(PIP) install --quiet -e '.[bench]'
	$(VENV)/bin/python bench/soak.py --minutes $(MINUTES) $(SOAK_ARGS)

clean: ## Remove what setup and run made (.venv, .tools, var)
	rm -rf $(VENV) .tools var
