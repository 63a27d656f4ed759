"Each library notebook is a test: its asserts run through nbdev's test API, one pytest test per notebook."
import re
from pathlib import Path
import nbformat
import pytest
from nbdev.test import test_nb as run_nb
from nbdev.config import get_config
from conftest import ROOT

NBS = sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))
SKIP = get_config(ROOT).tst_flags.split()  # 'slow notest'

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    "The notebook's fast cells (what `nbdev-test` runs) pass."
    ok, secs = run_nb(nb, skip_flags=SKIP, basepath=ROOT)
    assert ok, f'{nb.name} failed (details above); run `nbdev-test {nb.relative_to(ROOT)}`'

def _has_slow(nb):
    "Does the notebook have a cell flagged `#| slow`?"
    cells = nbformat.read(nb, as_version=4).cells
    return any(c.cell_type == 'code' and re.search(r'^#\|\s*slow\b', c.source, re.M) for c in cells)

SLOW = [p for p in NBS if _has_slow(p)]

@pytest.mark.slow
@pytest.mark.parametrize('nb', SLOW, ids=[p.stem for p in SLOW])
def test_notebook_slow_cells(nb):
    "The notebook with its `#| slow` cells too (they load real models or train)."
    ok, secs = run_nb(nb, skip_flags=['notest'], force_flags=['slow'], basepath=ROOT)
    assert ok, f'{nb.name} failed with slow cells (details above); run `nbdev-test {nb.relative_to(ROOT)} --flags slow`'
