#!/usr/bin/env bash
# Build the dcx kernels (the training kernels and the partitioned linear, on the shared base): host
# libraries into build/kernels/host (the C kernels with each family's native test and bench drivers,
# libdcx_<library>_aten.so PyTorch op libraries, libdcx_<library>_executorch.so ExecuTorch kernel
# libraries, the .pte runner) and the aarch64 cross build into build/kernels/aarch64 (C kernels, native
# drivers, ExecuTorch kernel libraries and .pte runner against the aarch64 executorch wheel, fetched
# once with pip download). Idempotent: a second run only rebuilds what changed.
#
# Environment: PYTHON (default: the repo's .venv, else python3), DCX_KERNELS_BUILD_DIR
# (default: build/kernels), DCX_BUILD_JOBS (default 2), DCX_SKIP_AARCH64=1 (host only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=kernels/build.sh
OUT=${DCX_KERNELS_BUILD_DIR:-$(cd "$HERE/.." && pwd)/build/kernels}
source "$HERE/../scripts/build_common.sh"

TORCH_PREFIX=$("$PYTHON" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
  die "$PYTHON cannot import torch: pip install torch==2.13.0 (or set PYTHON to the project's venv)"
ET_HOST=$("$PYTHON" -c 'import executorch, os; print(executorch.__path__[0])' 2>/dev/null) ||
  die "$PYTHON cannot import executorch: pip install executorch==1.5.1"
[[ -f "$ET_HOST/lib/libexecutorch.so" ]] || die "$ET_HOST/lib/libexecutorch.so is missing: reinstall executorch==1.5.1"

configure() {  # configure only when the folder is new or its settings changed
  local dir=$1; shift
  local stamp="$dir/.dcx-configure-args"
  local args="$*"
  if [[ ! -f "$dir/CMakeCache.txt" || ! -f "$stamp" || "$(cat "$stamp")" != "$args" ]]; then
    cmake -S "$ROOT/kernels" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
      { cat "$dir.configure.log" >&2; die "cmake configure failed for $dir (log above)"; }
    echo "$args" >"$stamp"
  fi
}

# ------------------------------------------------------------------ host
mkdir -p "$OUT/host"
configure "$OUT/host" -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -DDCX_EXECUTORCH_ROOT="$ET_HOST"
cmake --build "$OUT/host" -j "$JOBS" >"$OUT/host.build.log" 2>&1 ||
  { tail -n 60 "$OUT/host.build.log" >&2; die "host build failed (log: $OUT/host.build.log)"; }
echo "kernels/build.sh: host build ok -> $OUT/host"

# ------------------------------------------------------------------ aarch64
if [[ "${DCX_SKIP_AARCH64:-0}" == 1 ]]; then
  echo "kernels/build.sh: aarch64 build skipped (DCX_SKIP_AARCH64=1)"
  exit 0
fi
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
need aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
[[ -f /usr/aarch64-linux-gnu/lib/crt1.o ]] ||
  die "aarch64 C library not found: install the Debian package libc6-dev-arm64-cross"

ET_ARM="$OUT/aarch64-executorch"  # lib/ and include/ of the aarch64 wheel
if [[ ! -f "$ET_ARM/lib/libexecutorch.so" ]]; then
  WHEELS="$OUT/aarch64-executorch/wheels"
  mkdir -p "$WHEELS"
  ET_VERSION=$("$PYTHON" -c 'from importlib.metadata import version; print(version("executorch"))')
  if ! ls "$WHEELS"/executorch-"$ET_VERSION"-*aarch64*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download --quiet --only-binary :all: --no-deps --platform manylinux_2_28_aarch64 \
      --python-version 3.11 "executorch==$ET_VERSION" -d "$WHEELS" ||
      die "could not download the aarch64 executorch==$ET_VERSION wheel from PyPI (needed for the aarch64 ExecuTorch kernel); set DCX_SKIP_AARCH64=1 to build the host only"
  fi
  "$PYTHON" - "$WHEELS" "$ET_VERSION" "$OUT/aarch64-executorch" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, version, dest = sys.argv[1:]
whl = sorted(glob.glob(f"{wheels}/executorch-{version}-*aarch64*.whl"))[0]
with zipfile.ZipFile(whl) as z:  # executorch/{include,lib/libexecutorch.so} -> dest/{include,lib}
    for name in z.namelist():
        if name.startswith(("executorch/include/", "executorch/lib/libexecutorch.so")) and not name.endswith("/"):
            target = os.path.join(dest, name[len("executorch/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
PY
fi
mkdir -p "$OUT/aarch64"
configure "$OUT/aarch64" -DCMAKE_TOOLCHAIN_FILE="$ROOT/kernels/cmake/aarch64-linux-gnu.cmake" \
  -DDCX_BUILD_ATEN=OFF -DDCX_EXECUTORCH_ROOT="$ET_ARM"
cmake --build "$OUT/aarch64" -j "$JOBS" >"$OUT/aarch64.build.log" 2>&1 ||
  { tail -n 60 "$OUT/aarch64.build.log" >&2; die "aarch64 build failed (log: $OUT/aarch64.build.log)"; }
echo "kernels/build.sh: aarch64 build ok -> $OUT/aarch64 (run with: qemu-aarch64 -L /usr/aarch64-linux-gnu BIN)"
