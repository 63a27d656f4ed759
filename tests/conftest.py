"Shared fixtures: the kit's root, the optional real-data excerpts, a throwaway cache."
import os
from pathlib import Path
import pytest
import torch

# The tests run tiny models, for which one thread is as fast as two on an idle 2-core machine and
# up to 10x faster on a busy one (measured); INSCL_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get('INSCL_TEST_THREADS', '1')))

# submitit binds its logging handler to the sys.stderr of its import; imported first inside a test, that is the test's
# capsys stream, closed afterwards, and every later log line of the worker fails. Import it once here, for the whole suite.
try: import submitit  # noqa: F401
except ImportError: pass

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get('INSCL_REALDATA', ROOT.parent/'shared'/'realdata'))

@pytest.fixture
def realdata():
    "The real SuperNI/NLI excerpts beside the kit (CI has them, users do not): skip when absent."
    if not REALDATA.is_dir(): pytest.skip(f'no real-data excerpts at {REALDATA}')
    return REALDATA

@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    "Point the kit's cache at a fresh folder for this test."
    monkeypatch.setenv('INSCL_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'

def pytest_collection_modifyitems(config, items):
    "Slow tests first (stable otherwise): with two workers, the long ones start at once instead of last."
    items.sort(key=lambda it: it.get_closest_marker('slow') is None)
