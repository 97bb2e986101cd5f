# porter, serverless. `make demo` and `make test` work on a fresh clone:
# they install what they need into .venv (pinned moto, cfn-lint,
# cargo-lambda) and node_modules (asl-validator) first.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: demo test tools build-checked venv npm build lambda lambda-on-idle-cores test-debug lint machete check-asl check-docs clean bench fuzz

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
	$(CLIPPY_BUILD) cargo build --workspace

# The functions: one crate each under functions/ (the one list; the
# Function enum, the bench and the CDK construct are tested against it).
FUNCTIONS := $(notdir $(wildcard functions/*))

# The functions as they ship (release, x86_64 here; deploys default to
# arm64), all nine in one cargo-lambda run: dependencies compile once and the
# links share the cores. The runtime tests run these bootstraps behind a
# Lambda Runtime API, and check-infra's `sam build` finds them up to date.
# Native x86_64 links with the system's linker (`cargo`), not cargo-lambda's
# zig: zig's wrapper lives at a path made from the clone's .venv, which cargo
# counts in every crate's fingerprint, so each fresh clone rebuilt all the
# release dependencies. Cross builds (`make deploy`, arm64) keep zig.
lambda: venv
	CARGO_LAMBDA_COMPILER=cargo cargo lambda build --release $(addprefix --bin ,$(FUNCTIONS))

demo: venv build
	scripts/demo.sh

check-asl: npm
	@for f in statemachines/*.json; do \
	  npx --no-install asl-validator --json-path "$$f" || exit 1; \
	done

# Every relative link and #anchor in README.md and docs/ resolves, and the
# README stays at most 250 lines (python3's standard library only).
check-docs:
	python3 scripts/check-docs.py

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# `make test` checks what `make lint` checks without a second compile of
# the dependencies: clippy-driver, clippy's drop-in for rustc, compiles the
# workspace's own crates in the debug build the tests use, with the lints of
# Cargo.toml's [workspace.lints], and RUSTFLAGS=-Dwarnings makes any warning
# an error (as clippy's CI guide does); `cargo clippy` would first check
# every dependency again. The same for every cargo run of `make test` and
# `make demo`, or a change of RUSTFLAGS would rebuild the dependencies.
CLIPPY_BUILD := RUSTC_WORKSPACE_WRAPPER=clippy-driver RUSTFLAGS=-Dwarnings

# Declared dependencies the code does not use fail `make test`. Built once
# per target folder (CI keeps one between runs), pinned and --locked, in a
# folder of its own so it does not wait for the debug build's lock.
MACHETE_VERSION := 0.9.2
MACHETE := $(TARGET_DIR)/tools/bin/cargo-machete

$(MACHETE):
	CARGO_TARGET_DIR=$(TARGET_DIR)/tools/build cargo install -q --locked \
	  --version $(MACHETE_VERSION) --root $(TARGET_DIR)/tools cargo-machete

machete: $(MACHETE)
	$(MACHETE) --skip-target-dir

# Python's and npm's tools install while that build takes the cores: they
# wait on disk and the package registries, not the CPU.
tools: venv npm venv-sam venv-checkov npm-cdk $(MACHETE)

# The debug build with the tests' dev-dependencies: the SDK's test
# utilities are features, so building without them here would compile the
# SDK twice.
build-checked:
	cargo fmt --all -- --check
	$(CLIPPY_BUILD) cargo build --workspace --all-targets

test:
	$(MAKE) --no-print-directory -j2 build-checked tools
	$(MAKE) --no-print-directory -j2 lambda-on-idle-cores test-debug
	$(MAKE) --no-print-directory machete check-asl check-infra check-cdk check-docs
	$(CLIPPY_BUILD) cargo test --workspace -- runtime::
	$(VENV)/bin/cfn-lint --version >/dev/null
	scripts/check-render.sh

# The release build beside the tests, on the CPU they leave: they wait on
# moto (one Python process) most of the time, and at nice 19 the build
# yields a core to them whenever they want it, so their timing is what it
# was alone. It runs in its own target folders (cargo-lambda builds for
# an explicit target), so the two cargo runs take no lock from each other.
lambda-on-idle-cores:
	nice -n 19 $(MAKE) --no-print-directory lambda

# Every test of the debug build but the runtime tests, which run the
# release bootstraps once `lambda` has built them; then the short fuzz run.
test-debug:
	$(CLIPPY_BUILD) cargo test --workspace -- --skip runtime::
	$(TARGET_DIR)/debug/porter-fuzz --inputs $(FUZZ_SHORT) --out $(TARGET_DIR)/fuzz-out

# Inputs per fuzz target: a short run in `make test`, a full one in `make fuzz`.
FUZZ_SHORT ?= 20000
FUZZ_INPUTS ?= 1000000
FUZZ_SEED ?= $(shell date +%s)

# Every target with FUZZ_INPUTS inputs, a fresh seed each run (printed, so a
# failure replays with FUZZ_SEED=...). docs/security-model.md, "Fuzzed".
fuzz:
	cargo build --profile fuzz -p porter-fuzz
	$(TARGET_DIR)/fuzz/porter-fuzz --inputs $(FUZZ_INPUTS) --seed $(FUZZ_SEED) --out $(TARGET_DIR)/fuzz-out

# Sizes, cold starts and the other figures of docs/performance.md.
bench: venv
	scripts/bench.sh

clean:
	rm -rf $(VENV) node_modules .local $(CDK)/node_modules $(CDK)/dist $(CDK)/cdk.out

# infra/: SAM CLI and checkov, each in a virtualenv of its own (their pins
# clash with moto's and with each other's).
VENV_SAM := .venv-sam
VENV_CHECKOV := .venv-checkov
SAM := $(CURDIR)/$(VENV_SAM)/bin/sam
# The functions' CPU: deploys default to arm64 (needs the aarch64 Rust
# target, `rustup target add aarch64-unknown-linux-gnu`); ARCH=x86_64 for x86.
ARCH ?= arm64

.PHONY: venv-sam venv-checkov check-infra deploy aws-smoke

$(VENV_SAM)/.installed: tools/requirements-sam.txt
	python3 -m venv $(VENV_SAM)
	$(VENV_SAM)/bin/pip install -q --disable-pip-version-check -r tools/requirements-sam.txt
	touch $@

venv-sam: $(VENV_SAM)/.installed

$(VENV_CHECKOV)/.installed: tools/requirements-checkov.txt
	python3 -m venv $(VENV_CHECKOV)
	$(VENV_CHECKOV)/bin/pip install -q --disable-pip-version-check -r tools/requirements-checkov.txt
	touch $@

venv-checkov: $(VENV_CHECKOV)/.installed

# sam validate, cfn-lint, checkov, the stack in moto, sam build: no AWS account.
check-infra: venv venv-sam venv-checkov
	scripts/check-infra.sh

# Ships infra/template.yaml to your AWS account: docs/deploy-sam-and-cdk.md.
deploy: venv venv-sam
	cd infra && $(SAM) build --parameter-overrides Architecture=$(ARCH) && $(SAM) deploy --guided

# A smoke run in your own AWS account: porter's stack, a deploy, a second
# one, status and rollback of examples/hello-service, then everything it
# made deleted (about 40 minutes and $0.10-0.15). It refuses without
# AWS_SMOKE_ARGS=--yes; AWS_SMOKE_ARGS=--dry-run prints every call instead
# (check-infra runs that). docs/deploy-sam-and-cdk.md, "A smoke run in a
# real account".
AWS_SMOKE_ARGS ?=
aws-smoke:
	scripts/aws-smoke.sh $(AWS_SMOKE_ARGS)

# infra/cdk: the same stack as a CDK construct (docs/deploy-sam-and-cdk.md,
# "Deploy with CDK").
# Its npm packages (aws-cdk-lib, the CDK CLI that reads what that library
# synthesizes, TypeScript) are pinned in its own package-lock.json.
CDK := infra/cdk

.PHONY: npm-cdk check-cdk deploy-cdk

$(CDK)/node_modules/.installed: $(CDK)/package.json $(CDK)/package-lock.json
	cd $(CDK) && npm ci --no-audit --no-fund --silent
	touch $@

npm-cdk: $(CDK)/node_modules/.installed

# cdk synth, the assertion tests, parity with infra/template.yaml (and the
# parity check broken on purpose), the stacks in moto: no AWS account, no build.
check-cdk: venv venv-sam npm-cdk
	scripts/check-cdk.sh

# The functions for ARCH (as `sam build` builds them for `make deploy`),
# then `cdk deploy` of infra/cdk's app. --strict: the app warns when it
# would deploy stand-in bootstraps or the example service's values, and a
# warning stops the deploy. Pass the values `make deploy` asks for as
# CDK_ARGS="-c serviceName=... -c repositoryName=... -c regionBucketNames=a,b".
deploy-cdk: venv npm-cdk
	cargo lambda build --release $(if $(filter arm64,$(ARCH)),--arm64,--x86-64) $(addprefix --bin ,$(FUNCTIONS))
	cd $(CDK) && npm run --silent build && CDK_DISABLE_CLI_TELEMETRY=true \
	  npx --no-install cdk deploy --strict -c architecture=$(ARCH) $(CDK_ARGS)
