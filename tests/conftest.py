"""Shared fixtures: one offline tiny model and one synthetic data set per test session.

ANOMALYR1_CACHE points at a fresh folder, so tests never read (or write) the user's ~/.cache, and every
subprocess a test starts (torchrun, the CLIs) inherits the same cache.
"""
import os
import shutil
import tempfile

import pytest

OWN_CACHE = None
if not os.environ.get("ANOMALYR1_CACHE"):  # not setdefault: its argument would make an unused folder every run
    OWN_CACHE = os.environ["ANOMALYR1_CACHE"] = tempfile.mkdtemp(prefix="anomalyr1-test-cache-")


def pytest_sessionfinish(session, exitstatus):
    if OWN_CACHE:  # this session's alone: left behind, every `python -m pytest` would leave ~10 MB in the temp dir
        shutil.rmtree(OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the tiny offline Qwen2.5-VL, in eval mode."""
    import anomalyr1
    model, processor = anomalyr1.load("tiny", device="cpu")
    return model.eval(), processor


@pytest.fixture(scope="session")
def synthetic():
    """(root, json_path) of the synthetic MVTec-layout set, built into MMAD-schema questions."""
    import synth
    return synth.ensure_synthetic()
