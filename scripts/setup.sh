#!/usr/bin/env bash
# One-time, idempotent set-up of a fresh machine for building, running and testing casegraph.
# Called by `make run` and `make test`; safe to run again at any time.
# Only package registries are used (crates.io, PyPI, Debian, npm): never anything else.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# Rust toolchain: pinned in rust-toolchain.toml; rustup installs it on first use.
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust with rustup first (https://rustup.rs)"
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
fi

# Dependencies are fetched once so later builds work offline.
cargo fetch --locked --quiet

# Browser tests of the web console: Chromium from Debian's packages (never a browser
# download) and playwright-core from npm, pinned by tests/browser/package-lock.json.
if [ ! -x /usr/bin/chromium ]; then
    say "installing chromium (Debian package) for the console's browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi
if ! command -v node >/dev/null 2>&1; then
    say "installing Node.js (Debian package) for the console's browser tests"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
if [ ! tests/browser/node_modules/.package-lock.json -nt tests/browser/package-lock.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

say "ok"
