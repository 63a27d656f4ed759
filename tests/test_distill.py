"In-context-learning distillation: the loss, calibration, the teacher cache, student training, runs, errors, memory."
import copy
import math
import numpy as np
import pandas as pd
import pytest
import torch
import inscl.distill as D
from inscl.schemas import DISTILL_COLUMNS
from inscl.distill import (answer_kl, auc, calibrate, calibrated_teacher, check_same_tokenizer,
                           collate_last, distill_data, distill_loss, distill_run_id, last_logits, load_tokenizer, measure_peak_memory,
                           parse_method, predict_nli, run_distill, student_features, summarize_nli, teacher_cache_path, teacher_probs,
                           train_student)
from inscl.files import load_json, load_table
from inscl.icl import answer_probs, get_pattern
from inscl.models import load_model
from inscl.presets import load_preset
from inscl.train import TrainConfig

# ---------------------------------------------------------------- the loss on hand-computed distributions

def _softmax(z, t=1.0):
    e = np.exp(np.asarray(z, float) / t)
    return e / e.sum(-1, keepdims=True)

def test_loss_matches_manual_formula():
    zs = np.array([[0.5, 0.2], [2.0, -1.0], [0.0, 1.0]])
    zt = np.array([[1.0, 3.0], [0.0, 0.0], [-2.0, 0.5]])
    y = np.array([1, 0, 0])
    for alpha, tau in [(0.5, 2.0), (0.3, 1.0), (1.0, 4.0), (0.8, 0.5)]:
        pt, ps = _softmax(zt, tau), _softmax(zs, tau)
        kl = (pt * np.log(pt / ps)).sum(-1).mean()
        ce = -np.log(_softmax(zs)[np.arange(3), y]).mean()
        want = alpha * tau**2 * kl + (1 - alpha) * ce
        got = distill_loss(torch.tensor(zs), torch.tensor(y), torch.tensor(zt), alpha, tau).item()
        assert got == pytest.approx(want, rel=1e-6)
    # one worked number: teacher p(Yes)=sigmoid(2/2), student sigmoid(-0.3/2) at tau=2; alpha=0.5, gold Yes
    pt, ps = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(0.15))
    kl = pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    ce = -math.log(1 / (1 + math.exp(0.3)))
    assert distill_loss(torch.tensor([[0.5, 0.2]]), torch.tensor([1]), torch.tensor([[1.0, 3.0]]), 0.5, 2.0).item() == \
        pytest.approx(0.5 * 4 * kl + 0.5 * ce, rel=1e-6)

def test_pbft_variants_runs_and_ce(tmp_path, tmp_cache):
    "pbft (ce=vocab) and pbft_answer (ce=answer) run, record their CE, report both accuracies; CD's default CE is vocab."
    out = tmp_path/'runs'
    rows = pd.concat([run_distill(m, 'smoke', out_dir=out, memory=False, progress=False) for m in ('pbft', 'pbft_answer')], ignore_index=True)
    assert sorted(rows.run_id.unique()) == ['smoke-pbft-full-k0-gpt-3-s0', 'smoke-pbft_answer-full-k0-gpt-3-s0']
    assert load_json(out/'smoke-pbft-full-k0-gpt-3-s0'/'run.json')['ce'] == 'vocab'
    assert load_json(out/'smoke-pbft_answer-full-k0-gpt-3-s0'/'run.json')['ce'] == 'answer'
    assert rows.vocab_accuracy.notna().all() and (rows.vocab_accuracy <= 1 - rows.non_answer_rate + 1e-12).all()
    assert distill_run_id('cd', 'smoke', ce='vocab') == 'smoke-cd-full-k4-gpt-3-s0' != distill_run_id('cd', 'smoke', ce='answer')
    with pytest.raises(ValueError, match=r"use method 'pbft_answer'"): distill_run_id('pbft', 'smoke', ce='answer')
    with pytest.raises(ValueError, match=r"does not train"): distill_run_id('icl-student', 'smoke', ce='vocab')

def test_query_id_is_the_same_under_every_data_seed(tmp_path, tmp_cache):
    out = tmp_path/'runs'
    for s in (0, 1): run_distill('zero_shot', 'smoke', data_seed=s, out_dir=out, memory=False, progress=False)
    a, b = (load_table(out/f'smoke-zero_shot-k0-gpt-3-s{s}'/'predictions.csv') for s in (0, 1))
    assert a.query_id.tolist() == b.query_id.tolist() and a.query_id.str.len().eq(12).all()
    assert (a.groupby('split').query_id.nunique() == a.groupby('split').size()).all()
    assert 'vocab_correct' in a and (a.vocab_correct <= a.top_is_answer).all()

def test_runs_of_an_older_schema_are_redone(tmp_path, tmp_cache):
    out = tmp_path/'runs'
    run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False)
    rj = out/'smoke-zero_shot-k0-gpt-3-s0'/'run.json'
    info = load_json(rj); info.pop('results_version'); rj.write_text(__import__('json').dumps(info))
    assert not D._finished(rj.parent)
    run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False)
    assert load_json(rj)['results_version'] == D.RESULTS_VERSION

# ---------------------------------------------------------------- calibration and AUC

def test_calibration_hand_example():
    p = np.array([[0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.45, 0.45]])   # (No, Yes); the last is unnormalised
    q = calibrate(p, [0.2, 0.8])                                         # the prompt says "Yes" 80% on "N/A"
    assert q[0] == pytest.approx([1.5 / 2.375, 0.875 / 2.375])
    assert q[1] == pytest.approx([3.0 / 3.5, 0.5 / 3.5])
    assert q[3] == pytest.approx([0.8, 0.2])                             # a tie becomes the inverse prior
    assert q.argmax(-1).tolist() == [0, 0, 1, 0]
    assert calibrate(p, [[0.2, 0.8], [0.2, 0.8]]) == pytest.approx(q)
    assert calibrate(p, [0.5, 0.5]) == pytest.approx(p / p.sum(-1, keepdims=True))  # a neutral prompt changes nothing

def test_auc_and_calibration_invariance():
    gold, s = [0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9]
    assert auc(gold, s) == pytest.approx(0.75)
    assert math.isnan(auc([1, 1], [0.2, 0.3]))
    p = np.stack([1 - np.array(s), s], 1)
    assert auc(gold, calibrate(p, [0.3, 0.7])[:, 1]) == pytest.approx(0.75)
    from inscl.icl import prior_match
    assert auc(gold, prior_match(p)[:, 1]) == pytest.approx(0.75)

def test_calibration_moved_to_icl_still_importable():
    import inscl.icl
    assert D.calibrate is inscl.icl.calibrate and D.content_free_probs is inscl.icl.content_free_probs

# ---------------------------------------------------------------- run ids and the results schema

def test_result_columns_order():
    c = DISTILL_COLUMNS
    assert c[c.index('mode') + 1] == 'calibration' and c[c.index('calibrated_accuracy') + 1] == 'prior_accuracy'
    assert c == ['run_id', 'method', 'teacher', 'student', 'k', 'data_seed', 'pattern', 'mode', 'calibration', 'split', 'heuristic',
                 'label', 'accuracy', 'n', 'peak_mem_mb', 'train_seconds', 'auc', 'calibrated_accuracy', 'prior_accuracy', 'non_answer_rate',
                 'vocab_accuracy']

def test_run_ids_with_calibration():
    assert distill_run_id('cd', 'smoke') == 'smoke-cd-full-k4-gpt-3-s0'                         # 'none': ids unchanged
    assert distill_run_id('cd', 'smoke', calibration='none') == 'smoke-cd-full-k4-gpt-3-s0'
    assert distill_run_id('cd', 'smoke', calibration='prior') == 'smoke-cd-full-k4-gpt-3-s0-prior'
    assert distill_run_id('icl-student', 'smoke', calibration='contextual') == 'smoke-icl-student-k4-gpt-3-s0-contextual'
    assert distill_run_id('zero_shot', 'smoke', 0, 1, 'chat', None, calibration='prior') == 'smoke-zero_shot-k0-chat-s1-prior'
    rid = distill_run_id('cd', 'smoke', alpha=0.9, calibration='contextual')                  # after the overrides' hash
    assert rid.startswith('smoke-cd-full-k4-gpt-3-s0-') and rid.endswith('-contextual') and len(rid.split('-')) == 9
    p = load_preset('smoke', overrides={'distill.calibration': 'prior'})                     # the preset's default
    assert distill_run_id('icl', p) == 'smoke-icl-teacher-k4-gpt-3-s0-prior'
    assert distill_run_id('icl', p, calibration='none') == 'smoke-icl-teacher-k4-gpt-3-s0'
    assert distill_run_id('pbft', p) == 'smoke-pbft-full-k0-gpt-3-s0'                         # pbft ignores a preset default

def test_calibration_errors(tmp_path):
    with pytest.raises(ValueError, match=r"calibration='prior': method 'pbft' has no in-context scorer"):
        run_distill('pbft', 'smoke', calibration='prior', out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"method 'pbft' has no in-context scorer"): distill_run_id('pbft', 'smoke', calibration='contextual')
    with pytest.raises(ValueError, match=r"unknown calibration 'zhao'; expected one of: none, contextual, prior"):
        run_distill('icl', 'smoke', calibration='zhao', out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"cannot calibrate kl='vocab': use kl='answer'"):
        run_distill('cd', 'smoke', calibration='contextual', kl='vocab', out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"tokenizer \w+ \('tiny-smoke'\) has no chat template"):
        run_distill('zero_shot', 'smoke', pattern='chat', out_dir=tmp_path)
    assert not list(tmp_path.glob('*/run.json'))

def test_summarize_nli_prior_accuracy_and_old_tables():
    t = pd.DataFrame(dict(gold=[1, 0, 1, 0], pn_entail=[0.9, 0.8, 0.7, 0.6], correct=[True, False, True, False],
                          cal_correct=[True, True, False, False], prior_correct=[True, True, True, True], top_is_answer=True, heuristic='all'))
    r = summarize_nli(t, 'eval')
    assert [x['label'] for x in r] == ['all', 'entailed', 'non-entailed']
    assert [x['prior_accuracy'] for x in r] == [1.0, 1.0, 1.0] and r[0]['calibrated_accuracy'] == 0.5 and r[0]['accuracy'] == 0.5
    old = summarize_nli(t.drop(columns='prior_correct'), 'eval')                  # a predictions table written before prior matching
    assert math.isnan(old[0]['prior_accuracy']) and old[0]['accuracy'] == 0.5

# ---------------------------------------------------------------- methods and data

def test_parse_method():
    assert parse_method('icl') == ('icl', 'teacher') and parse_method('icl-student') == ('icl', 'student')
    assert parse_method('pbft') == ('pbft', 'student')
    assert parse_method('pbft_answer') == ('pbft_answer', 'student')
    with pytest.raises(ValueError, match=r"unknown method 'distil'; expected one of: icl, icl-teacher, icl-student, zero_shot, pbft, pbft_answer, cd"):
        parse_method('distil')

def test_distill_data_seeded_disjoint_balanced():
    p = load_preset('smoke')
    a, b = distill_data(p, 4, 0), distill_data(p, 4, 1)
    assert len(a['train']) == 64 and sum(r['gold'] for r in a['train']) == 32
    assert not {r['id'] for r in a['demos']} & {r['id'] for r in a['train']}
    assert [r['id'] for r in a['train']] != [r['id'] for r in b['train']]
    assert [r['id'] for r in a['eval']] == [r['id'] for r in b['eval']]
    assert {r['heuristic'] for r in a['ood']} == {'lexical_overlap', 'subsequence', 'constituent'}
    with pytest.raises(ValueError, match=r"n_train=5000 student training rows requested"):
        distill_data(p, 4, 0, n_train=5000)

# ---------------------------------------------------------------- teacher cache and training on tiny-smoke

@pytest.fixture(scope='module')
def smoke_setup():
    p = load_preset('smoke')
    return p, distill_data(p, 4, 0)

def test_teacher_cache_written_once_and_reused(smoke_setup, tmp_cache, monkeypatch):
    p, data = smoke_setup
    model, tok = load_model('tiny-smoke')
    first = teacher_probs('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0, model=model, tok=tok)
    assert not first.cached and first.path.is_file() and first.path.parent == tmp_cache/'teacher'
    assert first.path == teacher_cache_path('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0)
    assert not list(first.path.parent.glob('.*.tmp'))      # atomic: no leftovers
    mtime = first.path.stat().st_mtime_ns
    ref = answer_probs(model, tok, [get_pattern('gpt-3').format(r['premise'], r['hypothesis']) for r in data['train']],
                       (' No', ' Yes'), prefix=get_pattern('gpt-3').prefix(data['demos']), use_cache=False)
    np.testing.assert_allclose(first.logits, ref.logits, atol=1e-4)

    def boom(*a, **k): raise AssertionError('the teacher ran although its probabilities are cached')
    monkeypatch.setattr(D, 'answer_probs', boom)
    monkeypatch.setattr(D, 'load_model', boom)
    again = teacher_probs('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0)
    assert again.cached and again.path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.logits, first.logits)
    assert again.ids == [r['id'] for r in data['train']]
    # another data seed, pattern, k or training set is another key
    keys = {teacher_cache_path('tiny-smoke', data['train'], data['demos'], 'gpt-3', 1),
            teacher_cache_path('tiny-smoke', data['train'], data['demos'], 'minimal', 0),
            teacher_cache_path('tiny-smoke', data['train'], data['demos'][:2], 'gpt-3', 0),
            teacher_cache_path('tiny-smoke', data['train'][1:], data['demos'], 'gpt-3', 0)}
    assert len(keys) == 4 and first.path not in keys

def test_teacher_cache_stores_content_free_probs(smoke_setup, tmp_cache):
    p, data = smoke_setup
    model, tok = load_model('tiny-smoke')
    tp = teacher_probs('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0, model=model, tok=tok)
    pat = get_pattern('gpt-3')
    ref = answer_probs(model, tok, [pat.format('N/A', 'N/A')], pat.answers, prefix=pat.prefix(data['demos']), use_cache=False)
    assert tp.p_cf.shape == (1, 2)
    np.testing.assert_allclose(tp.p_cf, ref.p_norm, atol=1e-5)
    with np.load(tp.path) as z: assert 'p_cf' in z and z['p_cf'].shape == (1, 2) and len(z['ids']) == len(data['train'])
    again = teacher_probs('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0)
    assert again.cached and np.array_equal(again.p_cf, tp.p_cf)
    # the queries' numbers do not change when the content-free query shares their pass
    alone = answer_probs(model, tok, [pat.format(r['premise'], r['hypothesis']) for r in data['train']], pat.answers,
                         prefix=pat.prefix(data['demos']))
    np.testing.assert_allclose(tp.logits, alone.logits, atol=1e-4)
    # the version and the content-free inputs are part of the key
    assert teacher_cache_path('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0, content_free=('N/A', '')) != tp.path
    two = teacher_probs('tiny-smoke', data['train'][:4], data['demos'], 'gpt-3', 0, model=model, tok=tok, content_free=('N/A', '[MASK]'))
    assert two.p_cf.shape == (2, 2)
    # calibrated distributions and the calibrated teacher
    np.testing.assert_allclose(tp.calibrated('contextual'), calibrate(tp.p_norm, tp.p_cf))
    assert tp.calibrated('prior')[:, 1].mean() == pytest.approx(0.5, abs=1e-9)
    np.testing.assert_allclose(tp.calibrated('none'), tp.p_norm)
    ct = calibrated_teacher(tp, 'prior')
    np.testing.assert_allclose(np.exp(ct.logits), tp.calibrated('prior'), atol=1e-12)
    np.testing.assert_array_equal(ct.p, tp.p)
    assert calibrated_teacher(tp, 'none') is tp

def test_last_logits_match_answer_probs(smoke_setup):
    p, data = smoke_setup
    model, tok = load_model('tiny-smoke')
    q = data['train'][:7]
    b = collate_last(student_features(tok, q, 'gpt-3'), tok.pad_token_id)
    assert b['input_ids'][b['attention_mask'] == 0].eq(tok.pad_token_id).all()     # right padding
    with torch.no_grad(): z = last_logits(model, b)
    ref = answer_probs(model, tok, [get_pattern('gpt-3').format(r['premise'], r['hypothesis']) for r in q], (' No', ' Yes'))
    np.testing.assert_allclose(z[:, ref.answer_ids].numpy(), ref.logits, atol=1e-4)

def test_cd_reduces_kl_to_teacher(smoke_setup, tmp_cache):
    p, data = smoke_setup
    teacher, ttok = load_model('tiny-smoke', seed=1)        # a teacher that differs from the student
    tp = teacher_probs('tiny-smoke-seed1', data['train'], data['demos'], 'gpt-3', 0, model=teacher, tok=ttok)
    student, stok = load_model('tiny-smoke')
    prompts = [get_pattern('gpt-3').format(r['premise'], r['hypothesis']) for r in data['train']]
    before = answer_kl(tp.logits, answer_probs(student, stok, prompts, (' No', ' Yes')).logits)
    stats = train_student(student, stok, data['train'], TrainConfig(lr=3e-3, epochs=4, batch_size=8), teacher=tp, alpha=1.0, tau=2.0)
    after = answer_kl(tp.logits, answer_probs(student, stok, prompts, (' No', ' Yes')).logits)
    assert stats['steps'] == 32
    assert after < before / 3, (before, after)

def test_vocab_kl_trains_with_shared_tokenizer(smoke_setup, tmp_cache):
    p, data = smoke_setup
    teacher, tok = load_model('tiny-smoke', seed=1)
    q = data['train'][:16]
    tp = teacher_probs('tiny-smoke-seed1', q, data['demos'], 'gpt-3', 0, kl='vocab', model=teacher, tok=tok)
    assert tp.vocab_logits.shape == (16, len(tok))
    np.testing.assert_allclose(tp.vocab_logits[:, tp_ids(tok)], tp.logits, atol=1e-4)
    student, _ = load_model('tiny-smoke')
    stats = train_student(student, tok, q, TrainConfig(lr=1e-3, epochs=1, batch_size=8), teacher=tp, kl='vocab')
    assert np.isfinite(stats['final_loss'])

def tp_ids(tok):
    from inscl.icl import answer_token_ids
    return answer_token_ids(tok, (' No', ' Yes'))

# ---------------------------------------------------------------- runs

def test_run_distill_rows_and_resume(tmp_path, tmp_cache, monkeypatch):
    out = tmp_path/'runs'
    df = run_distill('cd', 'smoke', out_dir=out, memory=False, progress=False)
    assert list(df.columns) == DISTILL_COLUMNS
    run = out/'smoke-cd-full-k4-gpt-3-s0'
    assert (run/'results.csv').is_file() and (run/'predictions.csv').is_file()
    info = load_json(run/'run.json')
    assert info['finished'] and info['alpha'] == 0.5 and info['tau'] == 2.0 and info['n_train'] == 64
    assert not info['teacher_cached'] and 'kl_train_after' in info
    ev, ood = df[df.split == 'eval'], df[df.split == 'ood']
    assert sorted(ev.label) == ['all', 'entailed', 'non-entailed'] and set(ev.heuristic) == {'all'}
    assert len(ood) == 12
    assert set(zip(ood.heuristic, ood.label)) == {(h, l) for h in ['all', 'lexical_overlap', 'subsequence', 'constituent']
                                                  for l in ['all', 'entailed', 'non-entailed']}
    # the per-label and per-heuristic rows add up to the 'all' rows
    a = ood.set_index(['heuristic', 'label'])
    assert a.loc[('all', 'all'), 'n'] == a.loc[('all', 'entailed'), 'n'] + a.loc[('all', 'non-entailed'), 'n'] == 32
    assert a.loc[[(h, 'all') for h in ['lexical_overlap', 'subsequence', 'constituent']], 'n'].sum() == 32
    acc = (a.loc[('all', 'entailed'), 'accuracy'] * a.loc[('all', 'entailed'), 'n']
           + a.loc[('all', 'non-entailed'), 'accuracy'] * a.loc[('all', 'non-entailed'), 'n']) / 32
    assert a.loc[('all', 'all'), 'accuracy'] == pytest.approx(acc)
    assert a[a.index.get_level_values('label') != 'all'].auc.isna().all() and not np.isnan(a.loc[('all', 'all'), 'auc'])
    preds = load_table(run/'predictions.csv')
    assert len(preds) == 64 and (preds.query("split == 'ood'").correct.mean() == pytest.approx(a.loc[('all', 'all'), 'accuracy']))
    assert (df.train_seconds > 0).all() and df.peak_mem_mb.isna().all() and set(df['mode']) == {'full'} and set(df.k) == {4}

    # finished: not redone (neither the teacher nor the student runs)
    def boom(*a, **k): raise AssertionError('a finished run was redone')
    monkeypatch.setattr(D, 'train_student', boom)
    monkeypatch.setattr(D, 'load_model', boom)
    monkeypatch.setattr(D, 'distill_data', boom)
    again = run_distill('cd', 'smoke', out_dir=out, memory=False, progress=False)
    pd.testing.assert_frame_equal(again, df, check_dtype=False)

def test_run_distill_other_methods(tmp_path, tmp_cache):
    out = tmp_path/'runs'
    rows = pd.concat([run_distill(m, 'smoke', out_dir=out, memory=False, progress=False, student_mode=mode)
                      for m, mode in [('icl-teacher', None), ('zero_shot', None), ('pbft', 'lora')]], ignore_index=True)
    ids = sorted(rows.run_id.unique())
    assert ids == ['smoke-icl-teacher-k4-gpt-3-s0', 'smoke-pbft-lora-k0-gpt-3-s0', 'smoke-zero_shot-k0-gpt-3-s0']
    assert set(rows.query("method != 'pbft'")['mode']) == {'-'} and set(rows.query("method != 'pbft'").train_seconds) == {0}
    info = load_json(out/'smoke-pbft-lora-k0-gpt-3-s0'/'run.json')
    assert info['train_config']['mode'] == 'lora' and info['n_trainable'] < info['model_info']['n_params']
    # zero-shot and icl-student read the same student; ICL adds the 4 demonstrations
    assert load_json(out/'smoke-icl-teacher-k4-gpt-3-s0'/'run.json')['demo_ids'] == [r['id'] for r in distill_data(load_preset('smoke'), 4, 0)['demos']]

def test_cd_with_calibrated_teacher(tmp_path, tmp_cache, monkeypatch):
    "cd with calibration: the student is trained on the log of the calibrated teacher distribution; the run records it."
    out, seen = tmp_path/'runs', {}
    orig = D.train_student
    def spy(model, tok, queries, cfg, pattern, teacher, *a, **k):
        seen['t'] = teacher
        return orig(model, tok, queries, cfg, pattern, teacher, *a, **k)
    monkeypatch.setattr(D, 'train_student', spy)
    df = run_distill('cd', 'smoke', out_dir=out, memory=False, progress=False, calibration='prior')
    rid = 'smoke-cd-full-k4-gpt-3-s0-prior'
    assert list(df.columns) == DISTILL_COLUMNS and set(df.run_id) == {rid} and set(df.calibration) == {'prior'}
    info = load_json(out/rid/'run.json')
    assert info['calibration'] == 'prior' and info['run_id'] == rid
    data = distill_data(load_preset('smoke'), 4, 0)
    raw = teacher_probs('tiny-smoke', data['train'], data['demos'], 'gpt-3', 0)       # from the cache the run wrote
    assert raw.cached
    gold = np.array([r['gold'] for r in data['train']])
    assert info['teacher_train_accuracy'] == pytest.approx((raw.p.argmax(1) == gold).mean())
    assert info['teacher_train_accuracy_calibrated'] == pytest.approx((raw.calibrated('prior').argmax(1) == gold).mean())
    assert info['teacher_train_accuracy_by_calibration']['contextual'] == pytest.approx((raw.calibrated('contextual').argmax(1) == gold).mean())
    assert info['teacher_mean_p_yes_by_calibration']['prior'] == pytest.approx(0.5)
    np.testing.assert_allclose(seen['t'].logits, np.log(raw.calibrated('prior')), atol=1e-12)   # what the KL reads
    # the student's predictions of cd are read raw; the calibrated columns are still there
    preds = load_table(out/rid/'predictions.csv')
    assert (preds.pred == (preds.pn_entail > 0.5)).all()
    assert {'pc_entail', 'pp_entail', 'cal_correct', 'prior_correct', 'phenomenon'} <= set(preds.columns)
    # a second calibration reuses the teacher cache
    run_distill('cd', 'smoke', out_dir=out, memory=False, progress=False, calibration='contextual')
    info2 = load_json(out/'smoke-cd-full-k4-gpt-3-s0-contextual'/'run.json')
    assert info2['teacher_cached'] and info2['teacher_cache'] == info['teacher_cache']
    np.testing.assert_allclose(seen['t'].logits, np.log(raw.calibrated('contextual')), atol=1e-12)

def test_icl_methods_follow_their_calibration(tmp_path, tmp_cache):
    out = tmp_path/'runs'
    none = run_distill('icl-student', 'smoke', out_dir=out, memory=False, progress=False)
    prior = run_distill('icl-student', 'smoke', out_dir=out, memory=False, progress=False, calibration='prior')
    ctx = run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False, calibration='contextual')
    ctx0 = run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False)
    assert set(none.calibration) == {'none'} and set(prior.calibration) == {'prior'}
    np.testing.assert_allclose(prior.accuracy, none.prior_accuracy)
    np.testing.assert_allclose(ctx.accuracy, ctx0.calibrated_accuracy)
    for a, b in ((prior, none), (ctx, ctx0)):
        np.testing.assert_allclose(a.auc, b.auc)
        np.testing.assert_allclose(a.calibrated_accuracy, b.calibrated_accuracy)
        np.testing.assert_allclose(a.prior_accuracy, b.prior_accuracy)
    preds = load_table(out/'smoke-icl-student-k4-gpt-3-s0-prior'/'predictions.csv')
    for split, g in preds.groupby('split'): assert g.pp_entail.mean() == pytest.approx(0.5, abs=1e-6)   # fitted per split
    assert (preds.pred == preds.prior_pred).all()
    assert load_json(out/'smoke-icl-student-k4-gpt-3-s0-prior'/'run.json')['calibration'] == 'prior'

def test_predict_nli_phenomenon_column(smoke_setup):
    p, data = smoke_setup
    model, tok = load_model('tiny-smoke')
    q = data['eval'][:6]
    t = predict_nli(model, tok, q, 'gpt-3', calibration='contextual')
    assert list(t.phenomenon) == [r.get('phenomenon', '') for r in q] and (t.heuristic == 'all').all()
    assert (t.pred == t.cal_pred).all()
    o = predict_nli(model, tok, data['ood'][:4], 'gpt-3')
    assert list(o.heuristic) == [r['heuristic'] for r in data['ood'][:4]] and list(o.phenomenon) == [''] * 4

# ---------------------------------------------------------------- errors name the value

def test_bad_input_errors(tmp_path):
    out = tmp_path/'runs'
    with pytest.raises(ValueError, match=r"unknown method 'kd'"): run_distill('kd', 'smoke', out_dir=out)
    with pytest.raises(ValueError, match=r"unknown pattern 'gpt3'; expected one of: minimal, gpt-3, eval-harness"):
        run_distill('cd', 'smoke', pattern='gpt3', out_dir=out)
    with pytest.raises(ValueError, match=r"unknown student mode 'qlora'; expected one of: full, lora, bitfit"):
        run_distill('pbft', 'smoke', student_mode='qlora', out_dir=out)
    with pytest.raises(ValueError, match=r"unknown kl 'logits'; expected one of: answer, vocab"):
        run_distill('cd', 'smoke', kl='logits', out_dir=out)
    with pytest.raises(ValueError, match=r"k=1000 class-balanced demonstrations need 500 of gold=0, 500 of gold=1"):
        run_distill('cd', 'smoke', k=1000, out_dir=out)
    with pytest.raises(ValueError, match=r"answer word ' False' is not one token for tokenizer"):
        run_distill('icl', 'smoke', pattern='eval-harness', out_dir=out)
    with pytest.raises(ValueError, match=r"alpha=2"): run_distill('cd', 'smoke', alpha=2, out_dir=out)
    with pytest.raises(ValueError, match=r"mode 'bitfit': LlamaForCausalLM has no bias parameters"):
        run_distill('pbft', 'smoke', student_mode='bitfit', out_dir=out, memory=False, progress=False)
    assert not list(out.glob('*/run.json')) or not any(load_json(f)['finished'] for f in out.glob('*/run.json'))

def test_mismatched_tokenizers_with_vocab_kl(tmp_path):
    s = load_tokenizer('tiny-smoke')
    other = copy.deepcopy(s); other.add_tokens(['<extra>'])
    with pytest.raises(ValueError, match=r"teacher 'big' uses \w+ \(513 tokens\) and student 'tiny-smoke' uses \w+ \(512 tokens\)"):
        check_same_tokenizer(other, s, 'big', 'tiny-smoke')
    p = load_preset('smoke', overrides={'distill.teacher': 'tiny'})      # a 2000-token tokenizer vs the student's 512
    with pytest.raises(ValueError, match=r"kl='vocab'.*teacher 'tiny' uses .*student 'tiny-smoke' uses .*use kl='answer'"):
        run_distill('cd', p, kl='vocab', out_dir=tmp_path)

# ---------------------------------------------------------------- memory

@pytest.mark.slow
def test_measure_peak_memory_tiny():
    m = measure_peak_memory('zero_shot', 'smoke', 'infer', details=True)
    assert m['device'] == 'cpu' and m['peak_mb'] > 50 and m['peak_mb'] >= m['baseline_mb'] > 0
    assert math.isnan(measure_peak_memory('icl', 'smoke', 'train'))
    with pytest.raises(ValueError, match=r"unknown phase 'eval'"): measure_peak_memory('cd', 'smoke', 'eval')

@pytest.mark.slow
def test_measure_peak_memory_train_tiny():
    assert measure_peak_memory('cd', 'smoke', 'train') > 50

# ---------------------------------------------------------------- the chat pattern end to end (SmolLM2 has a chat template)

@pytest.fixture
def cache_with_models(tmp_path, monkeypatch):
    "A fresh cache whose `models/` is the real cache's (converted packaged models are not converted again)."
    from inscl.files import cache_dir
    models = cache_dir(None, 'models')
    root = tmp_path/'cache'; root.mkdir()
    (root/'models').symlink_to(models, target_is_directory=True)
    monkeypatch.setenv('INSCL_CACHE', str(root))
    return root

@pytest.mark.slow
def test_chat_pattern_end_to_end_smollm2(tmp_path, cache_with_models):
    "cd with the chat pattern, SmolLM2 as teacher and student (each reads its own template), contextual calibration."
    p = load_preset('smoke', overrides={'distill.teacher': 'smollm2-135m-instruct', 'distill.student': 'smollm2-135m-instruct',
                                        'distill.n_train': 8, 'distill.n_eval': 8})
    df = run_distill('cd', p, pattern='chat', out_dir=tmp_path, memory=False, progress=False, calibration='contextual')
    rid = 'smoke-cd-full-k4-chat-s0-contextual'
    assert set(df.run_id) == {rid} and set(df.pattern) == {'chat'}
    info = load_json(tmp_path/rid/'run.json')
    assert info['pattern'] == 'chat' and info['teacher_non_answer_rate'] <= 0.5 and np.isfinite(info['kl_train_after'])
    # the teacher read the demonstrations as chat turns: its cached numbers equal a pass over the rendered conversation
    model, tok = load_model('smollm2-135m-instruct')
    data = distill_data(p, 4, 0)
    tp = teacher_probs('smollm2-135m-instruct', data['train'], data['demos'], 'chat', 0)
    assert tp.cached
    pat = get_pattern('chat', tok)
    ref = answer_probs(model, tok, [pat.format(r['premise'], r['hypothesis']) for r in data['train'][:3]], ('No', 'Yes'),
                       prefix=pat.prefix(data['demos']), use_cache=False)
    np.testing.assert_allclose(tp.logits[:3], ref.logits, atol=1e-3)
    assert measure_peak_memory('zero_shot', p, 'infer', pattern='chat', calibration='prior') > 200

# ---------------------------------------------------------------- the real pair (packaged models)

@pytest.mark.slow
def test_real_pair_tokenizers():
    t, s = load_tokenizer('gemma3-270m'), load_tokenizer('smollm2-135m-instruct')
    from inscl.icl import answer_token_ids
    for tok in (t, s): assert len(answer_token_ids(tok, (' No', ' Yes'))) == 2
    with pytest.raises(ValueError, match=r"teacher 'gemma3-270m' uses .*student 'smollm2-135m-instruct' uses"):
        check_same_tokenizer(t, s, 'gemma3-270m', 'smollm2-135m-instruct')
