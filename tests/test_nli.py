"Loaders for MNLI/RTE/HANS file formats and the hub, and the embedded NLI generators (inscl.nli)."
import json
from collections import Counter
import pytest
from inscl.nli import load_mnli, load_rte, load_hans, load_nli, read_nli_file, HEURISTICS, premise_part
from inscl.nli_benchmark import builtin_nli, _NLI_HYPERNYMS, _NLI_ANTONYMS

def write_tsv(path, header, rows):
    path.write_text('\n'.join('\t'.join(map(str, r)) for r in [header, *rows]) + '\n', encoding='utf-8')
    return path

GLUE_TRAIN = ['index', 'promptID', 'pairID', 'genre', 'sentence1_binary_parse', 'sentence2_binary_parse',
              'sentence1_parse', 'sentence2_parse', 'sentence1', 'sentence2', 'label1', 'gold_label']
GLUE_DEV = GLUE_TRAIN[:-1] + ['label2', 'label3', 'label4', 'label5', 'gold_label']
LABELS3 = ['entailment', 'neutral', 'contradiction']

def mnli_rows(k=4, dev=False):
    "k rows per class in GLUE layout; premises contain an unbalanced quote like the real files."
    rows = []
    for i in range(3 * k):
        lab = LABELS3[i % 3]
        extra = [lab] * 4 if dev else []
        rows.append([i, 100 + i, f'{100 + i}{lab[0]}', 'fiction', '( ( A man ) sleeps )', '( x )', '(ROOT (S))', '(ROOT)',
                     f'A "man {i} sleeps.', f'Hypothesis {i}.', lab, *extra, lab])
    return rows

# --- local formats -------------------------------------------------------------------------------

def test_glue_train_and_dev_tsv(tmp_path):
    f = write_tsv(tmp_path/'train.tsv', GLUE_TRAIN, mnli_rows())
    recs = load_mnli(f)
    assert len(recs) == 8 and Counter(r['label'] for r in recs) == {'entailment': 4, 'contradiction': 4}
    assert recs[0] == {'id': '100e', 'premise': 'A "man 0 sleeps.', 'hypothesis': 'Hypothesis 0.', 'label': 'entailment', 'gold': 1}
    assert recs[1]['gold'] == 0 and recs[1]['id'] == '102c'
    d = write_tsv(tmp_path/'dev_matched.tsv', GLUE_DEV, mnli_rows(2, dev=True))
    assert len(load_mnli(d, binarize=False)) == 6
    # a folder resolves the split's file by name; local: prefix works too
    assert load_mnli(f'local:{tmp_path}', split='validation_matched') == load_mnli(d)
    assert len(load_mnli(tmp_path)) == 8

def test_lmbff_layout_gold_label_last(tmp_path):
    "LM-BFF k-shot files: parse columns, label1, gold_label last; label1 may disagree with gold_label."
    rows = mnli_rows(2)
    rows[0][-2] = 'neutral'                 # annotator label1 differs: gold_label wins
    recs = load_mnli(write_tsv(tmp_path/'k.tsv', GLUE_TRAIN, rows), binarize=False)
    assert [r['label'] for r in recs[:3]] == LABELS3
    assert [r['gold'] for r in recs[:3]] == [1, None, 0]

def test_multinli_jsonl_drops_dash(tmp_path):
    lines = [{'sentence1': 'P0', 'sentence2': 'H0', 'gold_label': 'entailment', 'pairID': 'a', 'annotator_labels': ['entailment']},
             {'sentence1': 'P1', 'sentence2': 'H1', 'gold_label': '-', 'pairID': 'b'},
             {'sentence1': 'P2', 'sentence2': 'H2', 'gold_label': 'neutral', 'pairID': 'c'},
             {'sentence1': 'P3', 'sentence2': 'H3', 'gold_label': 'contradiction', 'pairID': 'd'}]
    f = tmp_path/'multinli_1.0_dev_matched.jsonl'
    f.write_text('\n'.join(json.dumps(o) for o in lines) + '\n')
    assert [(r['id'], r['gold']) for r in load_mnli(f)] == [('a', 1), ('d', 0)]
    assert [r['id'] for r in load_mnli(f, binarize=False)] == ['a', 'c', 'd']
    assert load_mnli(tmp_path, split='validation_matched') == load_mnli(f)

def test_rte_tsv(tmp_path):
    f = write_tsv(tmp_path/'dev.tsv', ['index', 'sentence1', 'sentence2', 'label'],
                  [[0, 'Dana died.', 'Dana is dead.', 'entailment'], [1, 'Bacteria mutate.', 'Bacteria win.', 'not_entailment']])
    assert load_rte(f) == [{'id': '0', 'premise': 'Dana died.', 'hypothesis': 'Dana is dead.', 'label': 'entailment', 'gold': 1},
                           {'id': '1', 'premise': 'Bacteria mutate.', 'hypothesis': 'Bacteria win.', 'label': 'not_entailment', 'gold': 0}]
    with pytest.raises(ValueError, match="not_entailment'; expected one of: entailment, neutral, contradiction"):
        load_mnli(f)

HANS_ORIG = ['gold_label', 'sentence1_binary_parse', 'sentence2_binary_parse', 'sentence1_parse', 'sentence2_parse',
             'sentence1', 'sentence2', 'pairID', 'heuristic', 'subcase', 'template']
HANS_REGEN = ['gold_label', 'sentence1', 'sentence2', 'pairID', 'heuristic', 'subcase', 'template']

def hans_rows(cols):
    base = [('non-entailment', 'The doctor saw the lawyer .', 'The lawyer saw the doctor .', 'ex0', 'lexical_overlap', 'ln_subject/object_swap', 'temp1'),
            ('entailment', 'The lawyer was seen by the doctor .', 'The doctor saw the lawyer .', 'ex1', 'lexical_overlap', 'le_passive', 'temp35'),
            ('entailment', 'Clearly the judge slept .', 'The judge slept .', 'ex2', 'constituent', 'ce_adverb', 'temp58')]
    keys = ['gold_label', 'sentence1', 'sentence2', 'pairID', 'heuristic', 'subcase', 'template']
    return [[dict(zip(keys, b)).get(c, '( parse )') for c in cols] for b in base]

@pytest.mark.parametrize('cols', [HANS_ORIG, HANS_REGEN], ids=['original', 'regenerated'])
def test_hans_tsv_column_sets(tmp_path, cols):
    f = write_tsv(tmp_path/'heuristics_evaluation_set.txt', cols, hans_rows(cols))
    recs = load_hans(f)
    assert recs[1] == {'id': 'ex1', 'premise': 'The lawyer was seen by the doctor .', 'hypothesis': 'The doctor saw the lawyer .',
                       'label': 'entailment', 'heuristic': 'lexical_overlap', 'subcase': 'le_passive', 'template': 'temp35', 'gold': 1}
    assert [r['gold'] for r in recs] == [0, 1, 1]
    assert [r['id'] for r in load_hans(f, heuristics=['constituent'])] == ['ex2']
    assert load_hans(tmp_path) == recs                       # folder -> heuristics_evaluation_set.txt
    assert load_nli(f'local:{f}', 'ood') == recs             # dispatcher recognises HANS by its columns
    assert [r['id'] for r in load_hans(f, n_per_subcase=1)] == ['ex0', 'ex1', 'ex2']

# --- errors name file, line and field -------------------------------------------------------------

def test_errors_name_file_line_field(tmp_path):
    rows = mnli_rows(1)
    rows[1][-1] = 'maybe'
    f = write_tsv(tmp_path/'bad_label.tsv', GLUE_TRAIN, rows)
    with pytest.raises(ValueError, match=r"bad_label\.tsv line 3: field 'gold_label' has unknown label 'maybe'"):
        load_mnli(f)
    rows = mnli_rows(1); rows[2] = rows[2][:-1]
    f = write_tsv(tmp_path/'short.tsv', GLUE_TRAIN, rows)
    with pytest.raises(ValueError, match=r'short\.tsv line 4: expected 12 tab-separated fields .*got 11'):
        load_mnli(f)
    f = write_tsv(tmp_path/'nohyp.tsv', ['index', 'sentence1', 'label'], [[0, 'A', 'entailment']])
    with pytest.raises(ValueError, match=r'nohyp\.tsv line 2: no hypothesis field; expected one of: sentence2'):
        load_mnli(f)
    j = tmp_path/'bad.jsonl'
    j.write_text('{"sentence1": "A", "sentence2": "B", "gold_label": "entailment"}\n{"sentence1": "A", "sentence2": "B"\n')
    with pytest.raises(ValueError, match=r'bad\.jsonl line 2: not valid JSON'):
        load_mnli(j)
    j.write_text('{"sentence1": "A", "sentence2": "", "gold_label": "entailment"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl line 1: field 'sentence2' is empty"):
        load_mnli(j)
    d = tmp_path/'bad.json'
    d.write_text(json.dumps({'0': {'text_a': 'A', 'text_b': 'B', 'label': 'entailment'}, '1': {'text_a': 'A', 'label': 'neutral'}}, indent=4))
    with pytest.raises(ValueError, match=r"bad\.json line 7 \(entry '1'\): no hypothesis field"):
        load_mnli(d)
    with pytest.raises(FileNotFoundError, match='nope.tsv: no such file'):
        load_mnli(tmp_path/'nope.tsv')
    with pytest.raises(FileNotFoundError, match="no file for split 'test'"):
        load_mnli(tmp_path, split='test')

# --- the hub ---------------------------------------------------------------------------------------

def test_hub_conversion(monkeypatch):
    import datasets
    calls = []
    def fake(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        feats = datasets.Features({'premise': datasets.Value('string'), 'hypothesis': datasets.Value('string'),
                                   'label': datasets.ClassLabel(names=LABELS3), 'idx': datasets.Value('int32')})
        return datasets.Dataset.from_dict({'premise': ['P0', 'P1', 'P2', 'P3'], 'hypothesis': ['H0', 'H1', 'H2', 'H3'],
                                           'label': [0, 1, 2, -1], 'idx': [10, 11, 12, 13]}, features=feats)
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    recs = load_mnli('hub:nyu-mll/glue/mnli', split='validation_matched')
    assert calls == [('nyu-mll/glue', 'mnli', 'validation_matched')]
    assert recs == [{'id': '10', 'premise': 'P0', 'hypothesis': 'H0', 'label': 'entailment', 'gold': 1},
                    {'id': '12', 'premise': 'P2', 'hypothesis': 'H2', 'label': 'contradiction', 'gold': 0}]
    assert len(load_mnli('multi_nli', binarize=False)) == 3             # plain dataset name -> hub, label -1 skipped
    assert calls[-1] == ('multi_nli', None, 'train')
    assert load_nli('hub:nyu-mll/glue/mnli', 'eval') == recs
    assert calls[-1][2] == 'validation_matched'

def test_hub_hans_and_rte(monkeypatch):
    import datasets
    def fake(path, name=None, split=None, **kw):
        if path == 'hans':
            return datasets.Dataset.from_dict({'premise': ['A'], 'hypothesis': ['B'], 'label': [1], 'heuristic': ['subsequence'],
                                               'subcase': ['sn_NP/S'], 'template': ['temp37']},
                                              features=datasets.Features({'premise': datasets.Value('string'), 'hypothesis': datasets.Value('string'),
                                                                          'label': datasets.ClassLabel(names=['entailment', 'non-entailment']),
                                                                          'heuristic': datasets.Value('string'), 'subcase': datasets.Value('string'),
                                                                          'template': datasets.Value('string')}))
        return datasets.Dataset.from_dict({'sentence1': ['A'], 'sentence2': ['B'], 'label': [1], 'idx': [0]})  # bare ints
    monkeypatch.setattr(datasets, 'load_dataset', fake)
    h = load_nli('hub:hans', 'ood')
    assert (h[0]['label'], h[0]['gold'], h[0]['subcase']) == ('non-entailment', 0, 'sn_NP/S')
    assert load_rte('hub:nyu-mll/glue/rte', split='validation')[0]['label'] == 'not_entailment'

def test_hub_unreachable_message(monkeypatch):
    import datasets
    def boom(*a, **kw): raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")
    monkeypatch.setattr(datasets, 'load_dataset', boom)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ConnectionError) as e:
        load_mnli('hub:nyu-mll/glue/mnli')
    msg = str(e.value)
    assert 'hub:nyu-mll/glue/mnli' in msg and 'HF_HUB_OFFLINE is set' in msg and 'local:PATH' in msg and "'builtin'" in msg

def test_dispatcher_presets_and_errors():
    from inscl.presets import load_preset
    p = load_preset('tiny').distill
    tr, ev, ood = load_nli(p.train_data, 'train', n=60), load_nli(p.eval_data, 'eval', n=30), load_nli(p.ood_data, 'ood', n=60)
    assert len(tr) == 60 and len(ev) == 30 and len(ood) == 60
    assert not {r['premise'] for r in tr} & {r['premise'] for r in ev}
    assert Counter(r['gold'] for r in ood) == {0: 30, 1: 30} and 'heuristic' in ood[0]
    with pytest.raises(ValueError, match="unknown NLI data 'glue'; expected one of: builtin, builtin_hans, local:PATH, hub:NAME"):
        load_nli('glue')
    with pytest.raises(FileNotFoundError, match='local:/no/such: no such file'):
        load_nli('local:/no/such')

# --- real excerpts (skip when absent) -------------------------------------------------------------

def test_real_lmbff_mnli(realdata):
    f = realdata/'nli'/'lmbff_kshot'/'MNLI'/'16-13'/'train.tsv'
    assert len(load_mnli(f, binarize=False)) == 48
    recs = load_mnli(f)
    assert len(recs) == 32 and Counter(r['gold'] for r in recs) == {1: 16, 0: 16}
    assert len(load_mnli(realdata/'nli'/'lmbff_kshot'/'SNLI'/'16-13'/'train.tsv')) == 32

def test_real_mnli_sample_and_rte(realdata):
    m = load_mnli(realdata/'nli'/'mnli_sample'/'mnli_train_sample_8999.json', binarize=False)
    assert len(m) == 8999 and set(Counter(r['label'] for r in m)) == set(LABELS3)
    assert len(load_mnli(realdata/'nli'/'mnli_sample'/'mnli_train_sample_8999.json', n=200, seed=1)) == 200
    rte = load_rte(realdata/'nli'/'rte'/'rte_glue_dev_277.tsv')
    assert len(rte) == 277 and set(r['gold'] for r in rte) == {0, 1}
    assert len(load_rte(realdata/'nli'/'rte'/'rte_train_part_249.json')) == 249

def test_real_hans_regenerated(realdata):
    h = load_hans(realdata/'nli'/'hans_regenerated'/'hans_regen_seed0.tsv')
    assert len(h) == 30000 and len({r['subcase'] for r in h}) == 30
    assert Counter((r['heuristic'], r['gold']) for r in h) == {(k, g): 5000 for k in HEURISTICS for g in (0, 1)}
    lo = load_hans(realdata/'nli'/'hans_regenerated'/'hans_regen_seed0.tsv', heuristics=['lexical_overlap'], n_per_subcase=40, seed=0)
    assert len(lo) == 400 and Counter(r['gold'] for r in lo) == {0: 200, 1: 200}

# --- the embedded generators ----------------------------------------------------------------------

def _words(s): return s.rstrip('.').split()

def test_builtin_nli_labels_recomputed():
    "Recompute the label of every phenomenon from the sentences alone."
    conv = {'taller': 'shorter', 'older': 'younger', 'faster': 'slower', 'richer': 'poorer', 'stronger': 'weaker', 'heavier': 'lighter'}
    conv |= {v: k for k, v in conv.items()}
    rooms, outside = {'kitchen', 'attic', 'cellar', 'bedroom', 'bathroom'}, {'garden', 'park', 'yard'}
    antonyms = {frozenset((x, y)) for _, x, y in _NLI_ANTONYMS}
    for r in builtin_nli(seed=2, n=2100, binarize=False):
        p, h, l = _words(r['premise']), _words(r['hypothesis']), r['label']
        ph = r['phenomenon']
        if ph == 'quantifier':
            want = {('All', 'Some'): 'entailment', ('Some', 'All'): 'neutral', ('All', 'All'): 'entailment',
                    ('None', 'None'): 'entailment'}.get((p[0], h[0]), 'contradiction')
            assert l == want and p[1:4] == h[1:4]
            if p[0] == h[0] == 'All': assert len(h) < len(p)        # drop a modifier under "all"
            if p[0] == h[0] == 'None': assert len(h) > len(p)       # add one under "none"
        elif ph == 'hypernym':
            spec, gen = (h, p) if l == 'neutral' else (p, h)
            assert spec[:-2] == gen[:-2]
            assert (_NLI_HYPERNYMS[spec[-1]] == gen[-1]) == (l != 'contradiction')
        elif ph == 'negation':
            if ('not' in p) != ('not' in h): assert l == 'contradiction'
            else: assert 'not' not in p and l == ('entailment' if len(h) < len(p) else 'neutral')
        elif ph == 'antonym':
            if 'not' in p: assert l == 'neutral'
            elif 'not' in h: assert l == 'entailment' and frozenset((p[-1], h[-1])) in antonyms
            else: assert l == 'contradiction' and frozenset((p[-1], h[-1])) in antonyms
        elif ph == 'comparative':
            x1, a1, y1 = p[1], p[3], p[-1]; x2, a2, y2 = h[1], h[3], h[-1]
            want = 'entailment' if (y2, conv[a2], x2) == (x1, a1, y1) else 'neutral' if y2 != y1 and y2 != x1 else 'contradiction'
            assert l == want, r
        elif ph == 'location':
            wp, wh = set(p) & (rooms | outside | {'house'}), set(h) & (rooms | outside | {'house'} | {'library', 'office', 'station', 'museum'})
            if l == 'neutral': assert wp == {'house'} and wh <= rooms
            elif l == 'entailment': assert (wp <= rooms and wh == {'house'}) or (wp <= outside and 'outdoors' in h)
            else: assert wh != wp and not (wp <= rooms and wh == {'house'}), r
        elif ph == 'conjunction':
            if l == 'neutral': assert p[0] == 'Either'
            elif l == 'entailment': assert 'and' in p and 'not' not in h and h[0] != 'Neither'
            else: assert h[0] == 'Neither' or 'not' in h

def test_load_nli_dev_role_real_format(tmp_path):
    "Role `dev` of real data: the training file's rows whose premises hash to the dev part (about a fifth), binarised."
    rows = [[i, f'Premise number {i} about things.', f'Hypothesis {i}.', ['entailment', 'contradiction', 'neutral'][i % 3]] for i in range(300)]
    f = write_tsv(tmp_path/'train.tsv', ['index', 'sentence1', 'sentence2', 'gold_label'], rows)
    dev, train = load_nli(f'local:{f}', 'dev'), load_nli(f'local:{f}', 'train')
    assert dev and {premise_part(r['premise']) for r in dev} == {'dev'}
    assert 20 < len(dev) < 60 and len(train) == 200                 # 200 binary rows in all; dev is part of them
    assert {r['id'] for r in dev} <= {r['id'] for r in train}
