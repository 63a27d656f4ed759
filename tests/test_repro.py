"Same numbers on any machine: the committed fingerprint, recomputed with pinned numerics, and the run records that show the pin."
import json, os, subprocess, sys
import pytest
from inscl.batch import main, numerics_env, PINNED_NUMERICS
from conftest import ROOT

@pytest.mark.slow
def test_fingerprint_equals_the_committed_one(tmp_path, capsys):
    "The three pinned cells reproduce this CPU vendor's digests in tests/fingerprints.json, and their records say the pin was in force."
    rc = main(['fingerprint', '--keep', str(tmp_path), '--jobs', '1'])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert 'digests equal tests/fingerprints.json' in out
    recs = [json.loads(p.read_text()) for p in tmp_path.glob('*/*/record.json')]
    assert len(recs) == 3
    for r in recs:
        n = r['numerics']
        assert n['pinned'] and n['env'] == {**PINNED_NUMERICS, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}, n
        assert n['torch_cpu_capability'] == 'AVX2' and n['torch_threads'] == 1 and n['cpu_model'] and n['cpu_flags']

def test_fingerprint_file_is_complete():
    "The committed file holds one set per CPU vendor, each naming what it fingerprints, with digests of the canonical text it holds."
    import hashlib
    fp = json.loads((ROOT/'tests'/'fingerprints.json').read_text())
    assert {'AuthenticAMD', 'GenuineIntel'} <= set(fp['by_vendor'])
    for vendor, f in fp['by_vendor'].items():
        assert set(f['entries']) == {'smoke continual results (curriculum, inscl)', 'smoke distillation results (cd)',
                                     'tiny continual per-stage losses (stages 0-1)', 'tiny continual results (stages 0-1)'}, vendor
        for name, e in f['entries'].items():
            assert hashlib.sha256(('\n'.join(e['lines']) + '\n').encode()).hexdigest() == e['sha256'], (vendor, name)
        assert f['made_on']['numerics'] == PINNED_NUMERICS and f['made_on']['threads'] == 1 and vendor in f['made_on']['cpu_model'], vendor

def test_the_pin_changes_what_torch_runs():
    "A kernel started with the pinned variables uses AVX2 kernels and one thread, whatever the host has; --native-cpu sets none."
    code = 'import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())'
    r = subprocess.run([sys.executable, '-c', code], env={**os.environ, **numerics_env(1)}, capture_output=True, text=True, check=True)
    assert r.stdout.split() == ['AVX2', '1']
    assert not set(PINNED_NUMERICS) & set(numerics_env(1, native=True))

def test_lock_covers_the_dev_extra():
    "requirements.lock pins every installed distribution the dev extra pulls in, at the version installed here."
    from importlib.metadata import distributions
    lock = {}
    for line in (ROOT/'requirements.lock').read_text().splitlines():
        if line and not line.startswith((' ', '#')) and '==' in line:
            name, _, ver = line.partition('==')
            lock[name.strip().lower().replace('_', '-')] = ver.split()[0]
    assert lock['torch'] == '2.13.0' and 'inscl' not in lock
    for pkg in ['transformers', 'peft', 'datasets', 'numpy', 'pandas', 'scipy', 'pot', 'papermill', 'nbdev', 'pytest']:
        assert pkg in lock, pkg
    installed = {d.metadata['Name'].lower().replace('_', '-'): d.version for d in distributions()}
    off = {k: (v, installed[k]) for k, v in lock.items() if k in installed and installed[k].split('+')[0] != v}   # torch's +cpu label
    assert not off, f'installed versions differ from requirements.lock: {off}'

def test_fingerprint_checks_this_vendors_digests(tmp_path, monkeypatch, capsys):
    "The check uses the set of the CPU's vendor, names another vendor's set it equals, and fails for a vendor it has none for."
    import inscl.batch as b
    from inscl.files import save_json
    amd, intel = {'t': b.fingerprint_entry('x\n1\n')}, {'t': b.fingerprint_entry('x\n2\n')}
    made = dict(cpu_model='a cpu', torch='2.13.0', numerics=PINNED_NUMERICS, threads=1, git_commit='abc')
    save_json({'by_vendor': {'AuthenticAMD': dict(made_on=made, entries=amd), 'GenuineIntel': dict(made_on=made, entries=intel)}},
              tmp_path/'tests'/'fingerprints.json')
    monkeypatch.setattr(b, 'kit_root', lambda: tmp_path)
    monkeypatch.setattr(b, 'compute_fingerprints', lambda out, jobs, native, warm: amd)   # this machine computes AMD's digests
    for vendor, rc, says in [('AuthenticAMD', 0, 'all 1 digests equal tests/fingerprints.json for AuthenticAMD'),
                             ('GenuineIntel', 1, 'differs from tests/fingerprints.json for GenuineIntel'),
                             ('HygonGenuine', 1, 'has no digests for this CPU\'s vendor HygonGenuine')]:
        monkeypatch.setattr(b, 'cpu_vendor', lambda: vendor)
        assert main(['fingerprint']) == rc
        out = capsys.readouterr().out
        assert says in out, out
        assert ('it also equals the AuthenticAMD digests' in out) == (vendor != 'AuthenticAMD'), out
