#!/usr/bin/env bash
# The IAM statements the local stack checks every function's calls against
# (crates/local/src/callers.rs), rendered from infra/template.yaml in moto
# by scripts/dump_roles.py. Writes OUT (default: the committed
# crates/local/src/roles.json, which is how to update it after changing
# a role); check-infra.sh renders it afresh and fails if it differs.
# Needs .venv and .venv-sam.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-crates/local/src/roles.json}")
source scripts/offline-aws.sh
.venv-sam/bin/python scripts/sam_to_cfn.py infra/template.yaml porter-roles-code code.zip "$work/template.json"
start_moto
.venv/bin/python scripts/dump_roles.py "http://127.0.0.1:$port" "$work/template.json" porter-roles-code code.zip "$out"
