"""Shared fixtures: paths to the real data in ../shared/data (read-only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """Torch runs on one thread in every test (and `OMP_NUM_THREADS=1` is passed to the
    subprocesses that need equal numerics): the tensors are small, and on a shared 2-core machine
    intra-op threads mostly wait for each other (5-20x slower measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets; tests that need it fail loudly when it is missing."""
    assert DATA.is_dir(), f"expected the real data at {DATA}"
    return DATA


@pytest.fixture(scope="session")
def ptbxl_100hz_store(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """The 1,502-record PTB-XL subset prepared once per session at 100 Hz x 1000 samples."""
    from ecgscale.data.prepare import prepare
    from ecgscale.data.preprocess import PreprocessConfig

    out = tmp_path_factory.mktemp("ptbxl_100hz") / "ptbxl"
    return prepare("ptbxl", shared_data / "ptbxl_100hz", out, PreprocessConfig(fs=100, length=1000))


@pytest.fixture(scope="session")
def chromium():
    """`chromium(tmp, *flags) -> argv` of headless Chromium (Debian's package, which `make test`
    installs) with the flags this closed network needs and a fresh profile under `tmp`."""
    import shutil

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Chromium is needed for the report tests (make test installs it)"

    def argv(tmp: Path, *flags: str) -> list[str]:
        return [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp / 'chromium'}", "--virtual-time-budget=5000",
            *flags,
        ]  # fmt: skip

    return argv
