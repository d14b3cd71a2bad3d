import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def single_thread():
    """Deterministic, and fair to a 2-core machine."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def kernels_build():
    """``bash kernels/build.sh`` once per session, as the set-up does (seconds when already built)."""
    proc = subprocess.run(["bash", str(REPO / "kernels" / "build.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=1800)
    assert proc.returncode == 0, f"kernels/build.sh failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def native_built():
    """``bash runtimes/native/build.sh`` once per session: the host and aarch64 runners and their bundle."""
    proc = subprocess.run(["bash", str(REPO / "runtimes" / "native" / "build.sh")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable), timeout=1800)
    assert proc.returncode == 0, f"runtimes/native/build.sh failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="session")
def exported_all(tmp_path_factory) -> Path:
    """``dcx export --recipe all`` in every format (fresh programs), once per test process."""
    from dcx.methods.export import export_recipe

    out = tmp_path_factory.mktemp("exported_all")
    summary = export_recipe("all", "all", out)
    assert not summary.failed, summary.failed
    return out
