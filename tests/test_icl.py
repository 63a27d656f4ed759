"In-context learning for NLI: patterns, demonstrations, answer-word probabilities with a shared-prefix KV cache."
import numpy as np
import pytest
import torch
import pandas as pd
from inscl.icl import (get_pattern, build_demos, answer_token_ids, answer_probs, icl_predict, score_icl, calibrate, prior_match,
                       content_free_probs, CHAT_INSTRUCTION)
from inscl.models import load_model
from inscl.nli_benchmark import builtin_nli

def naive_probs(model, tok, texts, answers):
    "Reference: one forward pass per full text, softmax over the vocabulary at the last position."
    ids = answer_token_ids(tok, answers)
    out = []
    with torch.inference_mode():
        for t in texts:
            logits = model(**tok(t, return_tensors='pt')).logits[0, -1].double()
            out.append(torch.softmax(logits, -1)[ids].numpy())
    return np.stack(out)

# ---------------------------------------------------------------- the chat pattern on SmolLM2's tokenizer

@pytest.fixture(scope='module')
def sm_tok():
    from inscl.models import load_tokenizer
    return load_tokenizer('smollm2-135m-instruct')   # tokenizer only (the converted checkpoint's folder)

def _conversation(demos, query, answers=('No', 'Yes')):
    user = lambda r: CHAT_INSTRUCTION.format(premise=r['premise'], hypothesis=r['hypothesis'])
    msgs = [m for d in demos for m in ({'role': 'user', 'content': user(d)}, {'role': 'assistant', 'content': answers[d['gold']]})]
    return msgs + [{'role': 'user', 'content': user(query)}]

def test_chat_icl_predict_equals_rendered_conversation(tiny, sm_tok):
    "End to end on the tiny model with SmolLM2's template: the shared-prefix scores equal a forward pass over the rendered text."
    import copy
    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.chat_template = sm_tok.chat_template
    demos, queries = build_demos(NLI[20:], 2, data_seed=0), NLI[:5]
    t = icl_predict(model, tok, demos, queries, 'chat')
    texts = [tok.apply_chat_template(_conversation(demos, q), tokenize=False, add_generation_prompt=True) for q in queries]
    ref = naive_probs(model, tok, texts, ('No', 'Yes'))
    np.testing.assert_allclose(t.p_entail.values, ref[:, 1], atol=1e-5)
    s = score_icl(model, tok, NLI, queries, k=2, data_seed=0, pattern='chat')
    assert s.pattern == 'chat' and len(s.table) == 5

# ---------------------------------------------------------------- calibration

def test_icl_predict_calibration_columns(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    demos, queries = build_demos(NLI[20:], 4, data_seed=1), NLI[:12]
    t = icl_predict(model, tok, demos, queries, 'gpt-3', batch_size=5)
    texts = [pat.prefix(demos) + p for p in _prompts(pat, queries)]
    ref = naive_probs(model, tok, texts, pat.answers)
    cf = naive_probs(model, tok, [pat.prefix(demos) + pat.format('N/A', 'N/A')], pat.answers)[0]
    pn = ref / ref.sum(1, keepdims=True)
    np.testing.assert_allclose(t.attrs['p_cf'], cf / cf.sum(), atol=1e-5)        # the content-free query after the same demos
    np.testing.assert_allclose(t.pn_entail, pn[:, 1], atol=1e-5)
    np.testing.assert_allclose(t.pc_entail, calibrate(pn, cf)[:, 1], atol=1e-5)
    np.testing.assert_allclose(t.pp_entail, prior_match(pn)[:, 1], atol=1e-5)
    assert t.pp_entail.mean() == pytest.approx(0.5, abs=1e-8)
    gold = np.array([q['gold'] for q in queries])
    assert (t.pred == ref.argmax(1)).all() and (t.correct == (t.pred == gold)).all()
    assert (t.cal_pred == (t.pc_entail > 0.5)).all() and (t.cal_correct == (t.cal_pred == gold)).all()
    assert (t.prior_pred == (t.pp_entail > 0.5)).all() and (t.prior_correct == (t.prior_pred == gold)).all()
    for how, col in (('contextual', 'cal_pred'), ('prior', 'prior_pred')):
        c = icl_predict(model, tok, demos, queries, 'gpt-3', calibration=how)
        assert (c.pred == t[col]).all() and c.attrs['calibration'] == how
        np.testing.assert_allclose(c.pn_entail, t.pn_entail, atol=1e-6)           # raw columns kept
    np.testing.assert_allclose(content_free_probs(model, tok, 'gpt-3', demos), cf / cf.sum(), atol=1e-5)
    two = icl_predict(model, tok, demos, queries, 'gpt-3', content_free=('N/A', '[MASK]'))
    cf2 = naive_probs(model, tok, [pat.prefix(demos) + pat.format(x, x) for x in ('N/A', '[MASK]')], pat.answers)
    np.testing.assert_allclose(two.attrs['p_cf'], (cf2 / cf2.sum(1, keepdims=True)).mean(0), atol=1e-5)
    with pytest.raises(ValueError, match=r"content_free is empty"): icl_predict(model, tok, demos, queries, content_free=())
    with pytest.raises(ValueError, match=r"unknown calibration 'zhao'"): icl_predict(model, tok, demos, queries, calibration='zhao')
    # the merged frame of two calls (as run_distill writes it) keeps working with the attrs
    assert len(pd.concat([t.assign(split='a'), two.assign(split='b')])) == 24

def test_score_icl_calibration(tiny):
    model, tok = tiny
    s = score_icl(model, tok, NLI, NLI[:10], k=4, data_seed=2, calibration='prior')
    assert s.calibration == 'prior' and s.accuracy == pytest.approx(s.table.prior_correct.mean())
    assert len(s.p_cf) == 2 and sum(s.p_cf) == pytest.approx(1)

# ---------------------------------------------------------------- tiny models (fast)

@pytest.fixture(scope='module')
def tiny():
    model, tok = load_model('tiny-smoke', device='cpu')
    return model, tok

NLI = builtin_nli(seed=0, n=60)

def _prompts(pat, recs): return [pat.format(r['premise'], r['hypothesis']) for r in recs]

def test_autocast_runs(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    prefix, prompts = pat.prefix(build_demos(NLI[20:], 4, data_seed=0)), _prompts(pat, NLI[:4])
    r = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, autocast=torch.bfloat16)
    ref = answer_probs(model, tok, prompts, pat.answers, prefix=prefix)
    np.testing.assert_allclose(r.p_norm, ref.p_norm, atol=0.05)

# ---------------------------------------------------------------- packaged models (slow)

def _cache_check(model, tok, k, n_queries=8, pattern='gpt-3'):
    pat = get_pattern(pattern)
    train, queries = builtin_nli(seed=1, n=200), builtin_nli(seed=2, n=n_queries)
    prefix = pat.prefix(build_demos(train, k, data_seed=0))
    prompts = _prompts(pat, queries)
    cached = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=4)
    uncached = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=4, use_cache=False)
    return cached, uncached, len(tok(prefix)['input_ids'])

@pytest.fixture(scope='module')
def smollm2():
    return load_model('smollm2-135m-instruct', device='cpu')

@pytest.fixture(scope='module')
def gemma():
    return load_model('gemma3-270m', device='cpu')

@pytest.mark.slow
def test_smollm2_cached_equals_uncached(smollm2):
    cached, uncached, n = _cache_check(*smollm2, k=16, n_queries=6)
    print(f'smollm2 k=16: {n} prefix tokens, max |cached - uncached| = {np.abs(cached.p - uncached.p).max():.2e}')
    assert n > 300 and cached.n_prefix > 300
    assert np.abs(cached.p - uncached.p).max() < 1e-4
    assert np.abs(cached.p_norm - uncached.p_norm).max() < 1e-4

@pytest.mark.slow
def test_gemma3_cached_equals_uncached_past_sliding_window(gemma):
    model, tok = gemma
    cached, uncached, n = _cache_check(model, tok, k=24, n_queries=4)
    print(f'gemma3 k=24: {n} prefix tokens, max |cached - uncached| = {np.abs(cached.p - uncached.p).max():.2e}')
    assert n > model.config.sliding_window  # the prefix alone is longer than the 512-token window
    assert np.abs(cached.p - uncached.p).max() < 1e-4
    assert np.abs(cached.p_norm - uncached.p_norm).max() < 1e-4
