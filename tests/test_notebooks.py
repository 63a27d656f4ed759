"""Each library notebook is a test: its fast cells run (as `nbdev-test` runs them, pinned, in a fresh process), their asserts
pass and their outputs are the committed ones (`inscl-repro outputs --check`); the slow cells run through nbdev's test API."""
import re
from pathlib import Path
import nbformat
import pytest
from nbdev.test import test_nb as run_nb
from nbdev.config import get_config
from conftest import ROOT

NBS = sorted((ROOT/'nbs').glob('*/[0-9]*.ipynb'))   # nbs/<part>/<nn>_<name>.ipynb
name = lambda p: p.relative_to(ROOT/'nbs').with_suffix('').as_posix() if p.is_relative_to(ROOT/'nbs') else p.stem   # continual/00_data
SKIP = get_config(ROOT).tst_flags.split()  # 'slow notest'

from inscl.docs import library_notebooks
LIB = [ROOT/p for p in library_notebooks()]
EXP = [p for p in NBS if 'experiment' in p.stem]

@pytest.mark.parametrize('nb', EXP, ids=[name(p) for p in EXP])
def test_experiment_notebook(nb):
    "An experiment notebook runs end to end with its default parameters (the smoke preset); papermill keeps its outputs in the run folder, not here."
    ok, secs = run_nb(nb, skip_flags=SKIP, basepath=ROOT)
    assert ok, f'{nb.name} failed (details above); run `nbdev-test {nb.relative_to(ROOT)}`'

@pytest.mark.parametrize('nb', LIB, ids=[name(p) for p in LIB])
def test_notebook(nb):
    "The notebook's fast cells pass and show what is committed (timings, memory and temporary paths masked)."
    from inscl.docs import notebook_outputs
    msgs = notebook_outputs(nb, ROOT, check=True)
    assert not msgs, (f'{nb.name}: ' + '\n'.join(msgs) + f'\n(if the change is meant: inscl-repro outputs {nb.relative_to(ROOT)})')

def test_course_map():
    "The course's map names every notebook once, and the index links to each of them."
    from inscl.docs import COURSE, course_notebooks
    have = sorted(p.relative_to(ROOT).as_posix() for g in ('nbs/*/[0-9]*.ipynb', 'reports/[0-9]*.ipynb') for p in ROOT.glob(g))
    assert sorted(course_notebooks()) == have, set(have) ^ set(course_notebooks())
    index = ''.join(c.source for c in nbformat.read(ROOT/'nbs/index.ipynb', as_version=4).cells)
    for p in course_notebooks():
        link = p.removeprefix('nbs/') if p.startswith('nbs/') else '../' + p
        assert f']({link})' in index, f'nbs/index.ipynb does not link to {link}'

@pytest.mark.parametrize('nb', [ROOT/'nbs/index.ipynb'] + NBS + sorted((ROOT/'reports').glob('*.ipynb')), ids=name)
def test_kernel_named(nb):
    "Jupyter opens every notebook with the kit's kernel, without asking."
    assert nbformat.read(nb, as_version=4).metadata.get('kernelspec', {}).get('name') == 'python3', nb.name

def _has_slow(nb):
    "Does the notebook have a cell flagged `#| slow`?"
    cells = nbformat.read(nb, as_version=4).cells
    return any(c.cell_type == 'code' and re.search(r'^#\|\s*slow\b', c.source, re.M) for c in cells)

SLOW = [p for p in NBS if _has_slow(p)]

@pytest.mark.slow
@pytest.mark.parametrize('nb', SLOW, ids=[name(p) for p in SLOW])
def test_notebook_slow_cells(nb):
    "The notebook with its `#| slow` cells too (they load real models or train)."
    ok, secs = run_nb(nb, skip_flags=['notest'], force_flags=['slow'], basepath=ROOT)
    assert ok, f'{nb.name} failed with slow cells (details above); run `nbdev-test {nb.relative_to(ROOT)} --flags slow`'

@pytest.mark.parametrize('nb', EXP, ids=[name(p) for p in EXP])
def test_parameters_typed(nb):
    "Every papermill parameter is written `name: type = value  # help`, so `papermill --help-notebook` shows its type and help."
    import papermill as pm
    params = pm.inspect_notebook(str(nb))
    assert params, f'{nb.name}: no parameters cell'
    for name, p in params.items():
        assert p['inferred_type_name'] not in ('None', None), f'{nb.name}: parameter {name} has no type'
        assert p['help'], f'{nb.name}: parameter {name} has no help comment'
