"The nbdev project itself: config in pyproject, papermill's `parameters` tag surviving `nbdev-clean`, export in sync."
import json, shutil, subprocess, sys
import nbformat
from nbdev.clean import clean_nb
from nbdev.config import get_config
from conftest import ROOT

def _param_nb():
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("preset = 'smoke'  # which preset", metadata={'tags': ['parameters'], 'scrolled': True})
    c.execution_count = 3
    nb.cells = [c, nbformat.v4.new_code_cell('print(preset)')]
    return nb

def test_config_in_pyproject():
    cfg = get_config(ROOT)
    assert cfg.config_file == ROOT/'pyproject.toml'
    assert cfg.lib_name == 'inscl' and cfg.nbs_path == ROOT/'nbs'
    assert 'tags' in cfg.allowed_cell_metadata_keys

def test_parameters_tag_survives_nbdev_clean(tmp_path):
    "Run the real `nbdev-clean` CLI on a papermill notebook inside the project: the tag stays, other metadata goes."
    d = ROOT/'nbs'/'_tmp_clean_test'
    d.mkdir(exist_ok=True)
    try:
        f = d/'p.ipynb'
        nbformat.write(_param_nb(), f)
        subprocess.run([shutil.which('nbdev-clean') or 'nbdev-clean', '--fname', str(f)], cwd=ROOT, check=True)
        cell = json.loads(f.read_text())['cells'][0]
        assert cell['metadata'] == {'tags': ['parameters']}
        assert cell['execution_count'] is None
    finally: shutil.rmtree(d)

def test_without_the_setting_the_tag_is_lost():
    "The control: nbdev's default cleaning drops `tags`, which is why pyproject keeps it."
    nb = json.loads(nbformat.writes(_param_nb()))
    clean_nb(nb)
    assert 'tags' not in nb['cells'][0]['metadata']

def test_export_in_sync(tmp_path):
    "`nbdev-export` into a scratch copy reproduces `inscl/` exactly (never edit inscl/ by hand)."
    work = tmp_path/'kit'
    for p in ['nbs', 'inscl']: shutil.copytree(ROOT/p, work/p, ignore=shutil.ignore_patterns('__pycache__', '_*test*'))
    for p in ['pyproject.toml', 'settings.ini']: shutil.copy(ROOT/p, work/p)
    subprocess.run([sys.executable, '-c', 'from nbdev.doclinks import nbdev_export; nbdev_export.__wrapped__()'], cwd=work, check=True)
    for f in sorted((ROOT/'inscl').glob('*.py')):
        assert (work/'inscl'/f.name).read_text() == f.read_text(), f'inscl/{f.name} is out of sync with its notebook: run nbdev-export'
