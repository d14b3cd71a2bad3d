#!/usr/bin/env bash
# Build the native runner: build/native/host (dcx_runner against the host executorch wheel, and the
# qemu instruction-count plugin), build/native/aarch64 (dcx_runner cross-compiled against the
# aarch64 executorch wheel) and build/native/bundle (the aarch64 runner, every library it needs and
# glibc's loader: run it as `./ld-linux-aarch64.so.1 --library-path . ./dcx_runner ...`).
# Idempotent: a second run only rebuilds what changed. Independent of kernels/build.sh, but reuses
# the aarch64 executorch wheel it downloaded when it is there.
#
# Environment: PYTHON (default: the repo's .venv, else python3), DCX_BUILD_JOBS (default 2),
# DCX_SKIP_AARCH64=1 (host only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=runtimes/native/build.sh
OUT=$(cd "$HERE/../.." && pwd)/build/native
source "$HERE/../../scripts/build_common.sh"
SRC=$ROOT/runtimes/native

ET_HOST=$("$PYTHON" -c 'import executorch, os; print(executorch.__path__[0])' 2>/dev/null) ||
  die "$PYTHON cannot import executorch: pip install executorch==1.5.1"

build() {  # build DIR CMAKE_ARGS...: configure when the folder is new or its settings changed, then build
  local dir=$1; shift
  local stamp="$dir/.dcx-configure-args" args="$*"
  mkdir -p "$dir"
  if [[ ! -f "$dir/CMakeCache.txt" || ! -f "$stamp" || "$(cat "$stamp")" != "$args" ]]; then
    cmake -S "$SRC" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
      { cat "$dir.configure.log" >&2; die "cmake configure failed for $dir (log above)"; }
    echo "$args" >"$stamp"
  fi
  cmake --build "$dir" -j "$JOBS" >"$dir.build.log" 2>&1 ||
    { tail -n 60 "$dir.build.log" >&2; die "build failed for $dir (log: $dir.build.log)"; }
}

# ------------------------------------------------------------------ host
build "$OUT/host" -DDCX_EXECUTORCH_ROOT="$ET_HOST"
echo "runtimes/native/build.sh: host build ok -> $OUT/host"

# ------------------------------------------------------------------ aarch64
if [[ "${DCX_SKIP_AARCH64:-0}" == 1 ]]; then
  echo "runtimes/native/build.sh: aarch64 build skipped (DCX_SKIP_AARCH64=1)"
  exit 0
fi
need aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
need aarch64-linux-gnu-readelf binutils-aarch64-linux-gnu
[[ -f /usr/aarch64-linux-gnu/lib/crt1.o ]] ||
  die "aarch64 C library not found: install the Debian package libc6-dev-arm64-cross"

# The aarch64 wheel's headers and libraries: the wheel kernels/build.sh downloaded, else our own copy.
ET_VERSION=$("$PYTHON" -c 'from importlib.metadata import version; print(version("executorch"))')
ET_ARM=$OUT/aarch64-executorch
WHEEL=$(ls "$ROOT"/build/kernels/aarch64-executorch/wheels/executorch-"$ET_VERSION"-*aarch64*.whl \
           "$OUT"/wheels/executorch-"$ET_VERSION"-*aarch64*.whl 2>/dev/null | head -n 1 || true)
if [[ -z "$WHEEL" ]]; then
  mkdir -p "$OUT/wheels"
  "$PYTHON" -m pip download --quiet --only-binary :all: --no-deps --platform manylinux_2_28_aarch64 \
    --python-version 3.11 "executorch==$ET_VERSION" -d "$OUT/wheels" ||
    die "could not download the aarch64 executorch==$ET_VERSION wheel from PyPI; set DCX_SKIP_AARCH64=1 to build the host only"
  WHEEL=$(ls "$OUT"/wheels/executorch-"$ET_VERSION"-*aarch64*.whl | head -n 1)
fi
if [[ "$(cat "$ET_ARM/.wheel" 2>/dev/null)" != "$(basename "$WHEEL")" ]]; then
  rm -rf "$ET_ARM"
  "$PYTHON" - "$WHEEL" "$ET_ARM" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:  # executorch/{include/**, lib/*.so} -> dest/{include, lib}
    for name in z.namelist():
        keep = name.startswith("executorch/include/") or (name.startswith("executorch/lib/") and name.endswith(".so"))
        if keep and not name.endswith("/"):
            target = os.path.join(dest, name[len("executorch/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
PY
  basename "$WHEEL" >"$ET_ARM/.wheel"
fi

build "$OUT/aarch64" -DCMAKE_TOOLCHAIN_FILE="$ROOT/kernels/cmake/aarch64-linux-gnu.cmake" \
  -DDCX_EXECUTORCH_ROOT="$ET_ARM" '-DDCX_RUNNER_RPATH=$ORIGIN'
echo "runtimes/native/build.sh: aarch64 build ok -> $OUT/aarch64"

# ------------------------------------------------------------------ bundle
"$PYTHON" "$ROOT/android_harness/bundle.py" --runner "$OUT/aarch64/dcx_runner" --out "$OUT/bundle" \
  --search "$ET_ARM/lib" --search /usr/aarch64-linux-gnu/lib || die "assembling the bundle failed"
