"In-context learning for NLI: patterns, demonstrations, answer-word probabilities with a shared-prefix KV cache."
import numpy as np
import pytest
import torch
import pandas as pd
from inscl.icl import (PATTERNS, PATTERN_NAMES, Pattern, get_pattern, pattern_name, chat_pattern, build_demos, answer_token_ids,
                       answer_probs, icl_predict, score_icl, CALIBRATIONS, calibrate, prior_match, prior_weights,
                       apply_calibration, content_free_probs, CHAT_INSTRUCTION)
from inscl.models import load_model
from inscl.nli_benchmark import builtin_nli

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
    assert get_pattern('instruction').demo(p, h, 1) == \
        'Premise: A dog runs.\nHypothesis: An animal moves.\nDoes the premise entail the hypothesis? Yes or No?\nAnswer: Yes'
    assert PATTERNS['gpt-3'].answers == (' No', ' Yes') and PATTERNS['eval-harness'].answers == (' False', ' True')
    assert PATTERNS['instruction'].answers == (' No', ' Yes') and PATTERNS['instruction'].sep == '\n\n'
    assert list(PATTERNS) == ['minimal', 'gpt-3', 'eval-harness', 'instruction']
    assert PATTERN_NAMES == ('minimal', 'gpt-3', 'eval-harness', 'instruction', 'chat')

def test_prefix_blank_line_between_demos():
    pat = get_pattern('minimal')
    assert pat.prefix([_rec(1, 1, 'P.', 'H.'), _rec(2, 0, 'Q.', 'G.')]) == 'P. H. ? Yes\n\nQ. G. ? No\n\n'
    assert pat.prefix([]) == ''

def test_unknown_pattern():
    with pytest.raises(ValueError, match=r"unknown pattern 'gpt3'; expected one of: minimal, gpt-3, eval-harness, instruction, chat"):
        get_pattern('gpt3')
    with pytest.raises(ValueError, match=r"unknown pattern 'Chat'"): pattern_name('Chat')
    with pytest.raises(ValueError, match=r"pattern 'chat' renders a tokenizer's chat template: pass the tokenizer"): get_pattern('chat')
    assert isinstance(get_pattern(PATTERNS['minimal']), Pattern)
    assert pattern_name('chat') == 'chat' and pattern_name(PATTERNS['gpt-3']) == 'gpt-3'

# ---------------------------------------------------------------- the chat pattern on SmolLM2's tokenizer

@pytest.fixture(scope='module')
def sm_tok():
    from inscl.models import load_tokenizer
    return load_tokenizer('smollm2-135m-instruct')   # tokenizer only (the converted checkpoint's folder)

def _conversation(demos, query, answers=('No', 'Yes')):
    user = lambda r: CHAT_INSTRUCTION.format(premise=r['premise'], hypothesis=r['hypothesis'])
    msgs = [m for d in demos for m in ({'role': 'user', 'content': user(d)}, {'role': 'assistant', 'content': answers[d['gold']]})]
    return msgs + [{'role': 'user', 'content': user(query)}]

def test_chat_pattern_renders_the_template(sm_tok):
    pat = get_pattern('chat', sm_tok)
    assert pat.name == 'chat' and pat.answers == ('No', 'Yes')
    demos, q = [_rec(1, 1, 'A dog runs.', 'An animal moves.'), _rec(2, 0, 'A {cat} sleeps.', 'The cat runs.')], _rec(3, 1)
    for k in (0, 1, 2):
        want = sm_tok.apply_chat_template(_conversation(demos[:k], q), tokenize=False, add_generation_prompt=True)
        assert pat.prefix(demos[:k]) + pat.format(q['premise'], q['hypothesis']) == want
    # the system header: part of the prefix, once, at the start
    assert pat.prefix([]) == '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
    assert pat.prefix(demos).count('<|im_start|>system') == 1 and pat.prefix(demos).startswith('<|im_start|>system')
    assert pat.format('P.', 'H.').startswith('<|im_start|>user\nPremise: P.\nHypothesis: H.\n')
    assert pat.format('P.', 'H.').endswith('Answer Yes or No.<|im_end|>\n<|im_start|>assistant\n')
    assert pat.sep == '<|im_end|>\n'

def test_chat_answer_tokens(sm_tok):
    pat = get_pattern('chat', sm_tok)
    assert answer_token_ids(sm_tok, pat.answers) == [5230, 10539]
    full = pat.prefix([_rec(1, 1)]) + pat.format('P.', 'H.')
    for gold, tid in ((0, 5230), (1, 10539)):
        ids = sm_tok(full + pat.answers[gold], add_special_tokens=False)['input_ids']
        assert ids[:-1] == sm_tok(full, add_special_tokens=False)['input_ids'] and ids[-1] == tid   # one token after the assistant opens

def test_chat_pattern_errors(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match=r"tokenizer \w+ \('.*'\) has no chat template; pattern 'chat' needs .* use pattern 'instruction'"):
        get_pattern('chat', tok)
    from inscl.models import load_tokenizer
    with pytest.raises(ValueError, match=r"tokenizer \w+ \('tiny-smoke'\) has no chat template"):
        chat_pattern(load_tokenizer('tiny-smoke'))

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

def test_prior_match_hand_solved_binary():
    # p(Yes) = (0.8, 0.5), uniform prior: 4r/(4r+1) + r/(r+1) = 1  ->  r = w_yes/w_no = 1/2, q(Yes) = (2/3, 1/3)
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(prior_weights(p), [1.0, 0.5], atol=1e-9)
    np.testing.assert_allclose(prior_match(p), [[1/3, 2/3], [2/3, 1/3]], atol=1e-9)
    # a non-uniform prior: mean q(Yes) = 0.6 -> 4r/(4r+1) + r/(r+1) = 1.2 -> 8r^2+5r = 1.2(4r^2+5r+1) -> 3.2r^2 - r - 1.2 = 0
    r = (1 + np.sqrt(1 + 4 * 3.2 * 1.2)) / (2 * 3.2)
    np.testing.assert_allclose(prior_match(p, prior=[0.4, 0.6])[:, 1], [4*r/(4*r+1), r/(r+1)], atol=1e-9)

def test_prior_match_column_mean_equals_prior_and_keeps_ranking():
    rng = np.random.default_rng(3)
    p = rng.dirichlet([0.7, 4.0], size=200) * rng.uniform(0.1, 1, size=(200, 1))   # skewed to Yes, unnormalised rows
    q = prior_match(p)
    np.testing.assert_allclose(q.sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(q.mean(0), [0.5, 0.5], atol=1e-9)
    assert (np.argsort(q[:, 1], kind='stable') == np.argsort(p[:, 1] / p[:, 0], kind='stable')).all()
    p3 = rng.dirichlet([1, 2, 6], size=100)
    np.testing.assert_allclose(prior_match(p3, prior=[0.5, 0.3, 0.2]).mean(0), [0.5, 0.3, 0.2], atol=1e-8)
    # weights fitted on other (unlabelled) queries are applied as they are
    w = prior_weights(p)
    np.testing.assert_allclose(prior_match(p[:7], fit=p), (p[:7] * w) / (p[:7] * w).sum(1, keepdims=True), atol=1e-12)
    already = np.array([[0.3, 0.7], [0.7, 0.3]])
    np.testing.assert_allclose(prior_match(already), already, atol=1e-12)     # a balanced set is left alone

def test_calibration_errors():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    assert CALIBRATIONS == ('none', 'contextual', 'prior')
    with pytest.raises(ValueError, match=r"unknown calibration 'batch'; expected one of: none, contextual, prior"): apply_calibration(p, 'batch')
    with pytest.raises(ValueError, match=r"'contextual' needs the content-free probabilities"): apply_calibration(p, 'contextual')
    with pytest.raises(ValueError, match=r"must be 2 positive numbers that sum to 1"): prior_match(p, prior=[0.2, 0.2])
    with pytest.raises(ValueError, match=r"column\(s\) \[0\] have probability 0"): prior_match([[0.0, 1.0], [0.0, 0.3]])
    np.testing.assert_allclose(apply_calibration(p * 2, 'none'), p)
    np.testing.assert_allclose(apply_calibration(p, 'contextual', [0.2, 0.8]), calibrate(p, [0.2, 0.8]))
    np.testing.assert_allclose(apply_calibration(p, 'prior'), prior_match(p))

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
