"In-context learning for NLI: patterns, demonstrations, answer-word probabilities with a shared-prefix KV cache."
import numpy as np
import pytest
import torch
from inscl.icl import (PATTERNS, Pattern, get_pattern, build_demos, answer_token_ids, answer_probs, AnswerProbs,
                       icl_predict, score_icl)
from inscl.models import load_model
from inscl.nli import builtin_nli

def _rec(i, gold, p=None, h=None):
    return dict(id=f'r{i}', premise=p or f'Premise number {i}.', hypothesis=h or f'Hypothesis {i}.',
                label='entailment' if gold else 'contradiction', gold=gold)

POOL = [_rec(i, i % 2) for i in range(20)]  # 10 of each class

def naive_probs(model, tok, texts, answers):
    "Reference: one forward pass per full text, softmax over the vocabulary at the last position."
    ids = answer_token_ids(tok, answers)
    out = []
    with torch.inference_mode():
        for t in texts:
            logits = model(**tok(t, return_tensors='pt')).logits[0, -1].double()
            out.append(torch.softmax(logits, -1)[ids].numpy())
    return np.stack(out)

# ---------------------------------------------------------------- patterns

def test_patterns_exact_text():
    p, h = 'A dog runs.', 'An animal moves.'
    assert get_pattern('minimal').demo(p, h, 1) == 'A dog runs. An animal moves. ? Yes'
    assert get_pattern('gpt-3').demo(p, h, 0) == 'A dog runs. question: An animal moves. Yes or No? answer: No'
    assert get_pattern('eval-harness').demo(p, h, 1) == 'A dog runs. \nQuestion: An animal moves. True or False?\nAnswer: True'
    assert get_pattern('eval-harness').format(p, h) == 'A dog runs. \nQuestion: An animal moves. True or False?\nAnswer:'
    assert PATTERNS['gpt-3'].answers == (' No', ' Yes') and PATTERNS['eval-harness'].answers == (' False', ' True')
    assert list(PATTERNS) == ['minimal', 'gpt-3', 'eval-harness']

def test_prefix_blank_line_between_demos():
    pat = get_pattern('minimal')
    assert pat.prefix([_rec(1, 1, 'P.', 'H.'), _rec(2, 0, 'Q.', 'G.')]) == 'P. H. ? Yes\n\nQ. G. ? No\n\n'
    assert pat.prefix([]) == ''

def test_unknown_pattern():
    with pytest.raises(ValueError, match=r"unknown pattern 'gpt3'; expected one of: minimal, gpt-3, eval-harness"):
        get_pattern('gpt3')
    assert isinstance(get_pattern(PATTERNS['minimal']), Pattern)

# ---------------------------------------------------------------- demonstrations

def test_build_demos_balanced_seeded_excluding():
    d = build_demos(POOL, 8, data_seed=3, exclude_ids=['r0', 'r1', 'r2'])
    assert sorted(r['gold'] for r in d) == [0]*4 + [1]*4
    assert not {'r0', 'r1', 'r2'} & {r['id'] for r in d}
    assert len({r['id'] for r in d}) == 8
    assert [r['id'] for r in d] == [r['id'] for r in build_demos(POOL, 8, data_seed=3, exclude_ids=['r0', 'r1', 'r2'])]
    draws = {tuple(r['id'] for r in build_demos(POOL, 4, s)) for s in range(10)}
    assert len(draws) >= 8  # seeds differ
    firsts = [build_demos(POOL, 4, s)[0]['gold'] for s in range(40)]
    assert 5 < sum(firsts) < 35  # shuffled: the first demo is not always the same class

def test_build_demos_odd_unbalanced_zero():
    golds = [sum(r['gold'] for r in build_demos(POOL, 5, s)) for s in range(30)]
    assert set(golds) == {2, 3}  # 2+3 split, the extra one goes to a seeded class
    assert len(build_demos(POOL, 13, 0, balanced=False)) == 13
    assert build_demos(POOL, 0, 0) == []

def test_build_demos_too_many():
    with pytest.raises(ValueError, match=r"k=20 class-balanced demonstrations need 10 of gold=0, 10 of gold=1; "
                                         r"the pool has gold=0: 10, gold=1: 9 \(after excluding 1 query ids\)"):
        build_demos(POOL, 20, 0, exclude_ids=['r1'])
    with pytest.raises(ValueError, match=r"k=21 demonstrations but the pool has only 20 rows"):
        build_demos(POOL, 21, 0, balanced=False)

# ---------------------------------------------------------------- tiny models (fast)

@pytest.fixture(scope='module')
def tiny():
    model, tok = load_model('tiny-smoke', device='cpu')
    return model, tok

def tiny_gemma3(tok, sliding_window=16):
    "A random Gemma-3 text model with one sliding-window layer, to test the cache past the window."
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=sliding_window,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           layer_types=['sliding_attention', 'full_attention'])
    return Gemma3ForCausalLM(cfg).eval()

NLI = builtin_nli(seed=0, n=60)

def _prompts(pat, recs): return [pat.format(r['premise'], r['hypothesis']) for r in recs]

def test_answer_token_ids(tiny):
    _, tok = tiny
    ids = answer_token_ids(tok, (' No', ' Yes'))
    assert tok.convert_ids_to_tokens(ids) == ['ĠNo', 'ĠYes']
    assert tok('answer: Yes', add_special_tokens=False)['input_ids'][-1] == ids[1]
    with pytest.raises(ValueError, match=r"answer word ' False' is not one token for tokenizer .*first_token=True"):
        answer_token_ids(tok, (' False', ' True'))
    assert answer_token_ids(tok, (' False', ' True'), first_token=True)[0] == tok.convert_tokens_to_ids('ĠF')

def test_answer_probs_no_prefix_matches_naive(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    prompts = _prompts(pat, NLI[:7])
    r = answer_probs(model, tok, prompts, pat.answers, batch_size=3)
    ref = naive_probs(model, tok, prompts, pat.answers)
    np.testing.assert_allclose(r.p, ref, atol=1e-6)
    np.testing.assert_allclose(r.p_norm, ref / ref.sum(1, keepdims=True), atol=1e-6)
    assert r.n_prefix == 0 and isinstance(r, AnswerProbs)

@pytest.mark.parametrize('batch_size', [1, 3, 16])
def test_cached_prefix_equals_uncached_tiny_llama(tiny, batch_size):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    demos = build_demos(NLI[20:], 8, data_seed=1)
    prefix, prompts = pat.prefix(demos), _prompts(pat, NLI[:10])  # queries of different lengths: right padding
    assert len({len(tok(prefix + p)['input_ids']) for p in prompts}) > 3
    cached = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=batch_size)
    uncached = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=batch_size, use_cache=False)
    ref = naive_probs(model, tok, [prefix + p for p in prompts], pat.answers)
    assert cached.n_prefix >= len(tok(prefix)['input_ids']) - 1 and uncached.n_prefix == 0
    np.testing.assert_allclose(cached.p, uncached.p, atol=1e-5)
    np.testing.assert_allclose(cached.p, ref, atol=1e-5)
    np.testing.assert_array_equal(cached.top_id, uncached.top_id)

def test_cached_prefix_past_sliding_window_tiny_gemma3(tiny):
    _, tok = tiny
    model = tiny_gemma3(tok, sliding_window=16)
    pat = get_pattern('minimal')
    prefix, prompts = pat.prefix(build_demos(NLI[20:], 6, data_seed=2)), _prompts(pat, NLI[:6])
    assert len(tok(prefix)['input_ids']) > 4 * 16
    cached = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=4)
    ref = naive_probs(model, tok, [prefix + p for p in prompts], pat.answers)
    np.testing.assert_allclose(cached.p, ref, atol=1e-5)

def test_cache_not_consumed_and_order_kept(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    prefix, prompts = pat.prefix(build_demos(NLI[20:], 4, data_seed=0)), _prompts(pat, NLI[:9])
    a = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, batch_size=2)
    b = answer_probs(model, tok, prompts[::-1], pat.answers, prefix=prefix, batch_size=4)
    np.testing.assert_allclose(a.p, b.p[::-1], atol=1e-6)

def test_top_token_and_non_answer_rate(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    prompts = _prompts(pat, NLI[:6])
    r = answer_probs(model, tok, prompts, pat.answers)
    with torch.inference_mode():
        tops = [int(model(**tok(t, return_tensors='pt')).logits[0, -1].argmax()) for t in prompts]
    assert r.top_id.tolist() == tops
    assert r.non_answer_rate == pytest.approx(np.mean([t not in r.answer_ids for t in tops]))
    np.testing.assert_allclose(np.exp(r.logits) / np.exp(r.logits).sum(1, keepdims=True), r.p_norm, atol=1e-9)

def test_autocast_runs(tiny):
    model, tok = tiny
    pat = get_pattern('gpt-3')
    prefix, prompts = pat.prefix(build_demos(NLI[20:], 4, data_seed=0)), _prompts(pat, NLI[:4])
    r = answer_probs(model, tok, prompts, pat.answers, prefix=prefix, autocast=torch.bfloat16)
    ref = answer_probs(model, tok, prompts, pat.answers, prefix=prefix)
    np.testing.assert_allclose(r.p_norm, ref.p_norm, atol=0.05)

def test_score_icl(tiny):
    model, tok = tiny
    queries, train = NLI[:8], NLI
    s = score_icl(model, tok, train, queries, k=4, data_seed=5, pattern='gpt-3')
    assert not set(s.demo_ids) & {q['id'] for q in queries}
    t = s.table
    assert list(t.id) == [q['id'] for q in queries] and list(t.gold) == [q['gold'] for q in queries]
    assert s.accuracy == pytest.approx((t.pred == t.gold).mean())
    assert s.non_answer_rate == pytest.approx(1 - t.top_is_answer.mean())
    assert ((t.pn_entail > 0.5) == (t.pred == 1)).all()
    demos = build_demos(train, 4, 5, exclude_ids=[q['id'] for q in queries])
    ref = naive_probs(model, tok, [get_pattern('gpt-3').prefix(demos) + p for p in _prompts(get_pattern('gpt-3'), queries)], (' No', ' Yes'))
    np.testing.assert_allclose(t.p_entail.values, ref[:, 1], atol=1e-5)
    z = icl_predict(model, tok, [], queries, 'minimal')
    assert len(z) == len(queries)

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
def test_smollm2_demos_bring_answer_words(smollm2):
    "Zero-shot SmolLM2 often answers with another word; 16 demos teach the answer format (methods 3.4)."
    model, tok = smollm2
    train, queries = builtin_nli(seed=1, n=200), builtin_nli(seed=2, n=16)
    zero = score_icl(model, tok, train, queries, k=0, data_seed=0)
    k16 = score_icl(model, tok, train, queries, k=16, data_seed=0)
    assert k16.non_answer_rate <= 0.1 and zero.non_answer_rate > k16.non_answer_rate

@pytest.mark.slow
def test_gemma3_cached_equals_uncached_past_sliding_window(gemma):
    model, tok = gemma
    cached, uncached, n = _cache_check(model, tok, k=24, n_queries=4)
    print(f'gemma3 k=24: {n} prefix tokens, max |cached - uncached| = {np.abs(cached.p - uncached.p).max():.2e}')
    assert n > model.config.sliding_window  # the prefix alone is longer than the 512-token window
    assert np.abs(cached.p - uncached.p).max() < 1e-4
    assert np.abs(cached.p_norm - uncached.p_norm).max() < 1e-4
