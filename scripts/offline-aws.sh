# Sourced by check-infra.sh and check-cdk.sh: what both need to check a
# template without an AWS account or a network. Sets `work` (a scratch
# folder, removed on exit) and `start_moto`, which starts a moto server on
# a free port (`port`, `moto_pid`); one still running at exit is stopped.

# No account: fixed dummy credentials, no profile files.
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN

work=$(mktemp -d)
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ]; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

start_moto() {
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The local stack's moto server: moto with its answers made as AWS's
  # where they differ (crates/local/src/moto_server.py says which).
  .venv/bin/python crates/local/src/moto_server.py -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/moto-api/config" >/dev/null 2>&1 && return 0
    kill -0 "$moto_pid" 2>/dev/null || { cat "$work/moto.log"; exit 1; }
    sleep 0.1
  done
}
