"In-context-learning distillation: the loss, calibration, the teacher cache, student training, runs, memory."
import math
import numpy as np
import pandas as pd
import pytest
import torch
import inscl.distill as D
from inscl.schemas import DISTILL_COLUMNS
from inscl.distill import (calibrate, calibrated_teacher, check_same_tokenizer, distill_data, distill_loss, load_tokenizer,
                           measure_peak_memory, run_distill, teacher_cache_path, teacher_probs, train_student)
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

def test_runs_of_an_older_schema_are_redone(tmp_path, tmp_cache):
    out = tmp_path/'runs'
    run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False)
    rj = out/'smoke-zero_shot-k0-gpt-3-s0'/'run.json'
    info = load_json(rj); info.pop('results_version'); rj.write_text(__import__('json').dumps(info))
    assert not D._finished(rj.parent)
    run_distill('zero_shot', 'smoke', out_dir=out, memory=False, progress=False)
    assert load_json(rj)['results_version'] == D.RESULTS_VERSION

# ---------------------------------------------------------------- the results schema

def test_result_columns_order():
    c = DISTILL_COLUMNS
    assert c[c.index('mode') + 1] == 'calibration' and c[c.index('calibrated_accuracy') + 1] == 'prior_accuracy'
    assert c == ['run_id', 'method', 'teacher', 'student', 'k', 'data_seed', 'pattern', 'mode', 'calibration', 'split', 'heuristic',
                 'label', 'accuracy', 'n', 'peak_mem_mb', 'train_seconds', 'auc', 'calibrated_accuracy', 'prior_accuracy', 'non_answer_rate',
                 'vocab_accuracy']

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
