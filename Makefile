# porter, serverless. `make demo` and `make test` work on a fresh clone:
# they install what they need into .venv (pinned moto, cfn-lint,
# cargo-lambda) and node_modules (asl-validator) first.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: demo test venv npm build lambda lint check-asl clean

$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r tools/requirements.txt
	touch $@

venv: $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

npm: node_modules/.installed

build:
	cargo build --workspace

# The pack function as it ships (x86_64 here; deploys default to arm64):
# the runtime test runs this bootstrap behind a Lambda Runtime API.
lambda: venv
	cargo lambda build --package pack

demo: venv build
	scripts/demo.sh

check-asl: npm
	@for f in statemachines/*.json; do \
	  npx --no-install asl-validator --json-path "$$f" || exit 1; \
	done

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

test: venv npm check-asl lint build lambda
	cargo test --workspace
	$(VENV)/bin/cfn-lint --version >/dev/null
	scripts/check-render.sh

clean:
	rm -rf $(VENV) node_modules .local
