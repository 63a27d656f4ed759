"Data: the SuperNI loader on fixture and real task files, and the embedded benchmark's determinism and answers."
import csv, json, re, warnings
from collections import Counter
import pytest
from inscl.data import CATEGORIES, load_superni
from inscl.benchmark import builtin_superni, _WORDS, _NAMES_F, _NAMES_M, _POSITIVE, _NEGATIVE, _VERBS, _SIZES, _COLORS, _THINGS

# ---------------------------------------------------------------- loader on fixture files (real SuperNI schema)
def write_task(folder, name, n=25, cats=('Sentiment Analysis',), lang=('English',), **over):
    num = name.split('_')[0].removeprefix('task')
    d = {'Contributors': ['test'], 'Source': ['toy'], 'URL': [''], 'Categories': list(cats), 'Reasoning': [],
         'Definition': [f'Definition of {name}.'], 'Input_language': list(lang), 'Output_language': list(lang),
         'Instruction_language': ['English'], 'Domains': ['Reviews'],
         'Positive Examples': [{'input': 'a', 'output': 'b', 'explanation': ''}], 'Negative Examples': [],
         'Instances': [{'id': f'task{num}-{i:032x}', 'input': f'{name} input {i}', 'output': [f'ans {i}', f'alt {i}']} for i in range(n)],
         'Instance License': ['Unknown']}
    d.update(over)
    p = folder/f'{name}.json'
    p.write_text(json.dumps(d, indent=1))
    return p

@pytest.fixture
def tasks(tmp_path):
    "Four English tasks in three categories, plus a French one."
    write_task(tmp_path, 'task001_yelp_sentiment', 25, ['Sentiment Analysis'])
    write_task(tmp_path, 'task002_imdb_sentiment', 25, ['Sentiment Analysis'])
    write_task(tmp_path, 'task003_toxic', 40, ['Toxic Language Detection'])
    write_task(tmp_path, 'task004_xsum', 10, ['Summarization'])
    write_task(tmp_path, 'task005_french_sentiment', 30, ['Sentiment Analysis'], lang=['French'])
    return tmp_path

def test_load_round_trip(tasks):
    d = load_superni(tasks)
    recs = d['train'] + d['test']
    assert len(recs) == 100  # the French task is dropped
    r = next(x for x in recs if x['id'] == 'task003-' + f'{7:032x}')
    assert r == {'category': 'Detection', 'task': 'task003_toxic', 'instruction': 'Definition of task003_toxic.',
                 'input': 'task003_toxic input 7', 'outputs': ['ans 7', 'alt 7'], 'id': 'task003-' + f'{7:032x}'}
    n_test = Counter(x['category'] for x in d['test'])
    assert n_test == {'Sentiment_Analysis': 10, 'Detection': 8, 'Summarization': 2}   # 20% per category
    assert not {x['id'] for x in d['train']} & {x['id'] for x in d['test']}
    assert not any('french' in x['task'] for x in recs)

def test_split_deterministic_and_order_free(tasks):
    files = sorted(tasks.glob('*.json'))
    a, b = load_superni(tasks, split_seed=3), load_superni(files[::-1], split_seed=3)
    assert a == b
    c = load_superni(tasks, split_seed=4)
    assert {x['id'] for x in c['test']} != {x['id'] for x in a['test']}
    assert len(c['test']) == len(a['test'])
    # adding a task of another category leaves existing categories' splits alone
    write_task(tasks, 'task006_math', 20, ['Mathematics'])
    e = load_superni(tasks, split_seed=3)
    assert {x['id'] for x in e['test'] if x['category'] != 'Mathematics'} == {x['id'] for x in a['test']}

MALFORMED = [
    ('task039_bad_instances', dict(Instances=[]), "task039_bad_instances.json: 'Instances' is empty"),
    ('task040_no_instances', dict(Instances=None), "task040_no_instances.json: missing 'Instances'"),
    ('task041_no_definition', dict(Definition=None), "task041_no_definition.json: missing 'Definition'"),
    ('task042_empty_output', dict(Instances=[{'id': 'task042-1', 'input': 'x', 'output': ['ok']},
                                             {'id': 'task042-2', 'input': 'y', 'output': []}]),
     "task042_empty_output.json: instance task042-2 has an empty 'output'"),
    ('task043_blank_output', dict(Instances=[{'id': 'task043-1', 'input': 'x', 'output': ['  ']}]),
     "task043_blank_output.json: instance task043-1 has an empty 'output'"),
]

@pytest.mark.parametrize('name,over,msg', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_names_file_and_field(tasks, name, over, msg):
    p = write_task(tasks, name, 5, ['Mathematics'])
    d = json.loads(p.read_text())
    for k, v in over.items():
        if v is None: d.pop(k)
        else: d[k] = v
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError) as e: load_superni(tasks)
    assert msg in str(e.value)
    with pytest.warns(UserWarning, match=re.escape(msg)):
        d = load_superni(tasks, skip_malformed=True)
    assert name not in {x['task'] for x in d['train'] + d['test']} and len(d['train'] + d['test']) == 100

def test_bad_json(tasks):
    (tasks/'task044_broken.json').write_text('{"Definition": ["x"], "Instances": [')
    with pytest.raises(ValueError, match=r'task044_broken.json: not valid JSON'): load_superni(tasks)
    with pytest.warns(UserWarning, match='task044_broken.json'): load_superni(tasks, skip_malformed=True)

def test_too_few_records_for_the_preset_sizes(tasks):
    "A local data set with fewer records per task than the preset asks for fails, naming the data, the task and the counts."
    from dataclasses import replace
    from inscl.continual import study_data
    from inscl.presets import load_preset
    p = load_preset('smoke')
    p = replace(p, inscl=replace(p.inscl, data=f'local:{tasks}', n_train_per_task=500, n_test_per_task=1))
    with pytest.raises(ValueError, match=re.escape(f"local:{tasks} (train split, inscl.n_train_per_task): too few records for 500 per task: ") + r".* has \d+"):
        study_data(p)

def test_duplicate_ids_across_files(tasks):
    write_task(tasks, 'task001_copy', 3, ['Mathematics'], Instances=[{'id': 'task001-' + f'{0:032x}', 'input': 'x', 'output': ['y']}])
    with pytest.raises(ValueError, match='also appears in task001_'): load_superni(tasks)

# ---------------------------------------------------------------- real SuperNI excerpts
def test_realdata_superni(realdata):
    sn = realdata/'superni'
    with open(sn/'manifest.tsv') as f: manifest = {r['task']: r['coarse_category'].replace(' ', '_') for r in csv.DictReader(f, delimiter='\t')}
    with warnings.catch_warnings(): warnings.simplefilter('error'); d = load_superni(sn/'tasks', max_per_task=100)
    recs = d['train'] + d['test']
    got = {r['task']: r['category'] for r in recs}
    assert set(got) == set(manifest)                     # every file is English, well-formed and mapped
    assert got == manifest                               # our default map reproduces the manifest's categories
    assert set(got.values()) == set(CATEGORIES)
    assert all(r['outputs'] and all(o.strip() for o in r['outputs']) and r['instruction'] and r['input'] for r in recs)
    assert len({r['id'] for r in recs}) == len(recs)
    n_test = Counter(r['category'] for r in d['test']); n_all = Counter(r['category'] for r in recs)
    assert all(n_test[c] == int(n_all[c]*0.2 + 0.5) for c in CATEGORIES)
    t616 = [r for r in recs if r['task'] == 'task616_cola_classification']
    assert len(t616) == 40 and set(o for r in t616 for o in r['outputs']) <= {'acceptable', 'unacceptable'}

# ---------------------------------------------------------------- builtin benchmark
@pytest.fixture(scope='module')
def b0(): return builtin_superni(0)

def test_builtin_shape_and_determinism(b0):
    recs = b0['train'] + b0['test']
    assert len(b0['train']) == 16*64 and len(b0['test']) == 16*16
    assert Counter(r['category'] for r in b0['test']) == {c: 16 for c in CATEGORIES}
    assert len({r['id'] for r in recs}) == len(recs)
    assert not {r['id'] for r in b0['train']} & {r['id'] for r in b0['test']}
    assert all(set(r) == {'category', 'task', 'instruction', 'input', 'outputs', 'id'} for r in recs)
    assert all(len(r['outputs']) == 1 and r['outputs'][0].strip() for r in recs)
    assert builtin_superni(0) == b0
    b1 = builtin_superni(1)
    assert [r['input'] for r in b1['train']] != [r['input'] for r in b0['train']]
    small = builtin_superni(0, n_per_category=10, test_fraction=0.3)
    assert len(small['test']) == 16*3 and len(small['train']) == 16*7

def test_builtin_tasks_and_uneven_phrasings(b0):
    recs = b0['train'] + b0['test']
    for c in CATEGORIES:
        rs = [r for r in recs if r['category'] == c]
        assert len({r['task'] for r in rs}) >= 3, c
        freq = Counter(r['instruction'] for r in rs)
        assert len(freq) >= 5, (c, len(freq))
        top, bottom = max(freq.values()), min(freq.values())
        assert top >= 3*bottom, (c, freq)          # uneven: the commonest phrasing is far commoner than the rarest
        assert all(len((r['instruction'] + ' ' + r['input']).split()) <= 60 for r in rs)
    # related categories share phrasing words, unrelated ones share few
    words = lambda c: {w for r in recs if r['category'] == c for w in r['instruction'].lower().split()}
    j = lambda a, b: len(words(a) & words(b)) / len(words(a) | words(b))
    assert j('Closed_QA', 'Comprehension') > j('Closed_QA', 'Code')

def _solve(task, x):
    "An independent solver for several builtin tasks, working from the input text only."
    if task == 'noun_category':
        noun = x.split()[-1]; return next(g for g, ws in _WORDS.items() if noun in ws)
    if task == 'odd_one_out':
        ws = x.split(', '); groups = [next(g for g, v in _WORDS.items() if w in v) for w in ws]
        return next(w for w, g in zip(ws, groups) if groups.count(g) == 1)
    if task == 'grammaticality':
        pat = rf"^({'|'.join(_NAMES_F + _NAMES_M)}) ({'|'.join(v[2] for v in _VERBS)}) the ({'|'.join(_SIZES + _COLORS)}) ({'|'.join(_THINGS)})\.$"
        return 'acceptable' if re.match(pat, x) else 'unacceptable'
    if task == 'text_to_code':
        nums = [int(n) for n in re.findall(r'\d+', x)]
        return {'add': f'{nums[0]} + {nums[1]}', 'multiply': f'{nums[0]} * {nums[1]}', 'subtract': f'{nums[1]} - {nums[0]}',
                'the larger': f'max({nums[0]}, {nums[1]})', 'the smaller': f'min({nums[0]}, {nums[1]})'}[re.match(r'(add|multiply|subtract|the larger|the smaller)', x)[1]]
    if task == 'negation': return 'Yes' if re.search(r'\b(not|never)\b', x) else 'No'
    if task == 'has_number': return 'Yes' if re.search(r'\d', x) else 'No'
    if task == 'number': return re.search(r'\d+', x)[0]
    if task == 'polarity':
        ws = re.findall(r'[a-z]+', x.lower()); return 'positive' if sum(w in _POSITIVE for w in ws) > sum(w in _NEGATIVE for w in ws) else 'negative'
    if task == 'stars':
        ws = re.findall(r'[a-z]+', x.lower()); return str(3 + sum(w in _POSITIVE for w in ws) - sum(w in _NEGATIVE for w in ws))
    if task == 'coreference':
        names = re.findall(r'[A-Z][a-z]+', x.split('Question:')[0])[1:3]
        pron = re.search(r'because (he|she)', x)[1]
        return next(n for n in names if (n in _NAMES_F) == (pron == 'she'))
    if task == 'where_is':
        who = re.search(r'Where is (\w+)\?', x)[1]; return re.search(rf'{who} is in the (\w+)\.', x)[1]
    if task == 'how_many':
        m = re.search(r'How many (\w+) does (\w+) have', x); return re.search(rf'{m[2]} has (\d+) {m[1]}', x)[1]
    if task == 'date': return re.search(r'\d+ [A-Z][a-z]+', x)[0]
    if task == 'email': return re.search(r'\S+@\S+\.com', x)[0]
    if task == 'reverse_list': return str(json.loads(x)[::-1]).replace("'", '')
    if task == 'sort_list': return str(sorted(json.loads(x)))
    if task == 'run_code':
        env = {}; exec(x.replace('; print(x)', '').replace('; ', '\n'), env); return str(env['x'])
    if task == 'past_tense':
        w = x.split(); past = {v[1]: v[2] for v in _VERBS}; return ' '.join([w[0], past[w[1]], *w[2:]])
    if task == 'letter_count': return str(len(x.split()[-1]))
    if task == 'first_letter': return x.split()[-1][0]
    if task == 'longer_word': return max(x.split(' or '), key=len)
    if task == 'topic':
        ws = Counter(w.strip('.').lower() for w in x.split()); return next(w for w in _WORDS['animal'] if ws[w] == 3)
    if task == 'word_problem':
        a, b = [int(n) for n in re.findall(r'\d+', x)]; return str(a + b if 'buys' in x else a - b)
    if task == 'arithmetic': return str(eval(x))
    if task == 'parity': return 'even' if int(re.findall(r'\d+', x)[0]) % 2 == 0 else 'odd'
    return None

def test_builtin_answers_recomputed(b0):
    recs = b0['train'] + b0['test']
    checked = Counter()
    for r in recs:
        task = r['task'].removeprefix('builtin/')
        got = _solve(task, r['input'])
        if got is None: continue
        assert got == r['outputs'][0], (r['task'], r['input'], r['outputs'], got)
        checked[r['category']] += 1
    assert len(checked) >= 10 and sum(checked.values()) > 600, checked
