"Presets: parsing, typing, and errors that name the file, section, key and value."
import pytest
from pathlib import Path
from inscl.presets import load_preset, preset_names, preset_keys, Preset

def test_all_presets_parse_typed():
    assert preset_names()[:4] == ['smoke', 'tiny', 'small', 'paper']
    for n in preset_names():
        p = load_preset(n)
        assert isinstance(p, Preset) and p.name == n
        assert isinstance(p.inscl.lr, float) and isinstance(p.inscl.replay_per_task, int)
        assert isinstance(p.distill.data_seeds, list) and all(isinstance(s, int) for s in p.distill.data_seeds)
        assert p.runs_dir.is_absolute()

def test_defaults_apply_and_sections_override():
    assert load_preset('tiny').inscl.train_mode == 'full'      # from [DEFAULT]
    assert load_preset('small').inscl.train_mode == 'lora'     # overridden in [small]
    assert load_preset('paper').inscl.grad_accum * load_preset('paper').inscl.batch_size == 128  # the paper's effective batch

def test_unknown_preset_lists_valid():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*smoke, tiny, small, paper"): load_preset('huge')

def _ini(tmp_path, body):
    f = tmp_path/'settings.ini'
    f.write_text(body)
    return f

def test_unknown_and_missing_keys(tmp_path):
    full = (Path(__file__).parents[1]/'settings.ini').read_text()
    bad = full.replace('inscl.epochs = 1\n', 'inscl.epoch = 1\n', 1)
    with pytest.raises(ValueError, match=r"\[smoke\]: unknown key 'inscl.epoch'; valid keys: .*inscl.epochs"):
        load_preset('smoke', _ini(tmp_path, bad))
    with pytest.raises(ValueError, match=r"\[x\]: missing keys: description"):
        load_preset('x', _ini(tmp_path, '[x]\nseed = 1\n'))

def test_bad_value_names_key_and_text(tmp_path):
    full = (Path(__file__).parents[1]/'settings.ini').read_text().replace('inscl.lr = 1e-3', 'inscl.lr = fast', 1)
    with pytest.raises(ValueError, match=r"settings.ini \[smoke\] inscl.lr: 'fast' is not a valid float"):
        load_preset('smoke', _ini(tmp_path, full))

def test_overrides_are_checked():
    assert load_preset('smoke', overrides={'inscl.replay_per_task': '7'}).inscl.replay_per_task == 7
    with pytest.raises(ValueError, match="unknown key 'lr'"): load_preset('smoke', overrides={'lr': 1})
    with pytest.raises(AttributeError): load_preset('smoke').inscl.learning_rate

def test_settings_env(tmp_path, monkeypatch):
    monkeypatch.setenv('INSCL_SETTINGS', str(tmp_path/'nope.ini'))
    with pytest.raises(FileNotFoundError, match='INSCL_SETTINGS'): preset_names()

def test_calibration_key_checked_and_in_step_with_icl(tmp_path):
    from inscl.presets import CHOICES
    from inscl.icl import CALIBRATIONS
    assert CHOICES['distill.calibration'] == CALIBRATIONS
    assert {load_preset(n).distill.calibration for n in preset_names()} <= set(CALIBRATIONS)
    assert load_preset('smoke').distill.calibration == 'none'                       # [DEFAULT]
    assert load_preset('tiny', overrides={'distill.calibration': 'contextual'}).distill.calibration == 'contextual'
    with pytest.raises(ValueError, match=r"\[tiny\] distill.calibration: unknown value 'zhao'; expected one of: none, contextual, prior"):
        load_preset('tiny', overrides={'distill.calibration': 'zhao'})
    full = (Path(__file__).parents[1]/'settings.ini').read_text().replace('distill.calibration = none', 'distill.calibration = Prior', 1)
    with pytest.raises(ValueError, match=r"settings.ini \[smoke\] distill.calibration: unknown value 'Prior'"):
        load_preset('smoke', _ini(tmp_path, full))

def test_cache_dir_is_honoured_and_env_wins(tmp_path, monkeypatch):
    "The preset's cache_dir (relative to its settings.ini) is where caches go; $INSCL_CACHE overrides it; ~/.cache/inscl is the fallback."
    import inscl.files as F
    from inscl.models import tiny_corpus, tiny_tokenizer
    monkeypatch.setattr(F, '_preset_cache', None, raising=False)  # restored after the test
    monkeypatch.delenv('INSCL_CACHE', raising=False)
    full = (Path(__file__).parents[1]/'settings.ini').read_text()
    assert 'cache_dir = ~/.cache/inscl\n' in full
    ini = _ini(tmp_path, full.replace('cache_dir = ~/.cache/inscl\n', 'cache_dir = my-cache\n', 1))
    p = load_preset('smoke', ini)
    assert p.cache_dir == tmp_path/'my-cache'
    assert F.cache_dir(None, 'x') == tmp_path/'my-cache'/'x'
    tiny_tokenizer(300, corpus=tiny_corpus(['Sort the list.', 'Add the numbers.'] * 50))   # a real cache user, with no cache argument
    assert len(list((tmp_path/'my-cache'/'tokenizers').glob('bpe300-*.json'))) == 1
    monkeypatch.setenv('INSCL_CACHE', str(tmp_path/'env'))
    assert F.cache_dir(None, 'x') == tmp_path/'env'/'x'
    monkeypatch.delenv('INSCL_CACHE'); F.set_cache_root(None)
    assert F.cache_root() == Path('~/.cache/inscl').expanduser()
