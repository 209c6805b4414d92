# `make run` and `make test` bootstrap everything they need, idempotently:
# a virtualenv in .venv, the NSQ binaries in .tools/bin (built from the
# Go module in tools/nsq, unless nsqd is already on PATH), the npm packages
# in node_modules (centrifuge-js for the demo page, playwright-core for the
# browser test) and, for `make test`, Debian's chromium.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := .tools/bin
NSQ_APPS := nsqd nsqlookupd nsqadmin nsq_tail
ORIG_PATH := $(PATH)
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: all setup run test test-python test-ruby bench clean

all: setup

setup: $(VENV)/.installed nsq ruby node_modules/.installed

# The Ruby bridge's tests run on Debian's Ruby packages (no RubyGems, no Bundler);
# ruby-rails for the /cable tests' Rails 6.1 app (tests/ruby/rails_app).
RUBY_PACKAGES := ruby ruby-minitest ruby-actioncable ruby-activerecord ruby-sqlite3 ruby-rails
RUBY_CHECK := require "minitest"; require "active_support/all"; require "action_cable"; require "active_record"; require "sqlite3"; require "rails"
.PHONY: ruby
ruby:
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
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The browser test drives Debian's chromium (with playwright-core from npm;
# Playwright's own browser downloads are never used). Without it, that test
# is skipped and says so.
.PHONY: chromium
chromium:
	@if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		echo "chromium: installing Debian's chromium for the browser test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
			|| echo "chromium: COULD NOT BE INSTALLED: the browser test will be skipped"; \
	else \
		echo "chromium: not found and no apt-get: the browser test will be skipped"; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

# Use nsqd from PATH when there is one; otherwise build NSQ v1.3.0 with Go.
.PHONY: nsq
nsq:
	@if [ ! -x $(BIN)/nsqd ] && PATH="$(ORIG_PATH)" command -v nsqd >/dev/null \
			&& PATH="$(ORIG_PATH)" command -v nsqlookupd >/dev/null \
			&& PATH="$(ORIG_PATH)" command -v nsqadmin >/dev/null; then \
		echo "nsq: using $$(PATH="$(ORIG_PATH)" command -v nsqd)"; \
	else \
		$(MAKE) --no-print-directory $(addprefix $(BIN)/,$(NSQ_APPS)); \
	fi

$(addprefix $(BIN)/,$(NSQ_APPS)) &: tools/nsq/go.mod tools/nsq/go.sum
	@command -v go >/dev/null || { echo "nsq: Go is needed to build nsqd (or put nsqd and nsqlookupd on PATH)"; exit 1; }
	cd tools/nsq && go build -o $(CURDIR)/$(BIN)/ $(addprefix github.com/nsqio/nsq/apps/,$(NSQ_APPS))

run: setup
	@mkdir -p var/nsqd
	@echo
	@echo "  pushgate is starting. Open the demo in your browser:"
	@echo
	@echo "    http://127.0.0.1:$${DEMO_PORT:-8080}"
	@echo
	@echo "  (log in as alice in one window and bob in another). Gateway on http://127.0.0.1:$${PUSHGATE_PORT:-8000},"
	@echo "  nsqd on 127.0.0.1:4150/4151, nsqlookupd on 127.0.0.1:4160/4161, nsqadmin on http://127.0.0.1:4171."
	@echo "  The demo publisher also sends to channel 'demo' every 3 s. To see messages arrive in a terminal, run:"
	@echo "    $(VENV)/bin/python examples/watch.py demo"
	@echo "  and publish your own:"
	@echo "    curl -d '{\"channel\":\"demo\",\"data\":{\"hello\":1}}' 'http://127.0.0.1:4151/pub?topic=pushgate'"
	@echo
	$(VENV)/bin/honcho -f Procfile.dev start

test: setup chromium
	$(MAKE) --no-print-directory test-python test-ruby

test-python:
	$(VENV)/bin/python -m pytest -q -rs $(PYTEST_ARGS)

test-ruby:
	cd bridges/rails && ruby -Ilib -Itest -e 'Dir["test/**/*_test.rb"].sort.each { |f| require File.expand_path(f) }'

bench: setup
	$(VENV)/bin/python bench/fanout.py

clean:
	rm -rf $(VENV) .tools var
