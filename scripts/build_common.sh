# Sourced by kernels/build.sh and runtimes/native/build.sh: what both need before building.
#   SCRIPT: the caller's name for messages; OUT: its build folder (created and locked: one build at a time).
# Sets ROOT, JOBS (DCX_BUILD_JOBS, default 2) and PYTHON (the repo's .venv, else python3); defines die/need;
# checks the host compilers and CMake.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JOBS=${DCX_BUILD_JOBS:-2}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

die() { echo "$SCRIPT: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found: install the Debian package $2 (apt-get install $2)"; }

need cmake cmake
need make make
need gcc gcc
need g++ g++

mkdir -p "$OUT"
exec 9>"$OUT/.build.lock"
flock 9  # one build at a time (parallel test sessions)
