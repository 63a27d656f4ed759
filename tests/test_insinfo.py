"InsInfo: normalisation, taggers, DBSCAN dedup, idf scores against hand-computed values."
import json, math
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.insinfo import (normalize_tag, dedup_tags, insinfo_scores, parse_tags, TagParseError, OfflineTagger,
                           PrecomputedTagger, LMTagger, get_tagger, tag_clusters)

def test_normalize_tag():
    assert normalize_tag('Question-Answering') == 'question answer'
    assert normalize_tag('Summaries of NEWS articles') == 'summary of news article'
    assert normalize_tag('  ran, 42 Boxes ') == 'run box'
    with pytest.raises(ValueError, match='is a int'): normalize_tag(3)

def test_idf_by_hand():
    # stage 1: N = 3, f_x = 3, f_y = 1, f_z = 1 -> a1 = log 3, a2 = 0
    tbt = {'A': {'a1': ['x', 'y'], 'a2': ['x']}, 'B': {'b1': ['x', 'z']}, 'C': {'c1': ['y', 'z']}}
    assert insinfo_scores(tbt, 1) == {'A': [('a1', 1.0), ('a2', 0.0)]}
    # stage 2: N = 4, f_x = 3, f_y = 2, f_z = 2
    s = insinfo_scores(tbt, 2)
    a1, a2, b1 = math.log(4/3) + math.log(2), math.log(4/3), math.log(4/3) + math.log(2)
    assert dict(s['A']) == pytest.approx({'a1': a1 / (a1 + a2), 'a2': a2 / (a1 + a2)})
    assert s['B'] == [('b1', 1.0)] and 'C' not in s
    assert insinfo_scores(tbt, 0) == {}

def test_scores_sorted_and_normalised():
    tbt = {'A': {'a1': ['x'], 'a2': ['x', 'rare'], 'a3': ['x', 'y']}, 'B': {'b': ['x', 'y']}}
    s = insinfo_scores(tbt, 1)['A']
    assert [i for i, _ in s] == ['a2', 'a3', 'a1'] and sum(v for _, v in s) == pytest.approx(1)

def test_bad_tags_named():
    with pytest.raises(ValueError, match="'a' are 'x'"): insinfo_scores({'A': {'a': 'x'}, 'B': {'b': ['x']}}, 1)
    with pytest.raises(ValueError, match="task 'A'"): insinfo_scores({'A': {}, 'B': {'b': ['x']}}, 1)
    with pytest.raises(ValueError, match='stage 2 out of range'): insinfo_scores({'A': {'a': ['x']}}, 2)

class Lookup(Encoder):
    def __init__(self, vecs): self.vecs, self.key = vecs, None
    def encode(self, texts): return np.array([self.vecs[t] for t in texts], dtype=float)

def test_dedup_every_cluster():
    # two clusters of 5 near-identical tags each; the last cluster must be processed too (official off-by-one)
    c1 = [f'sent{i}' for i in range(5)]; c2 = [f'math{i}' for i in range(5)]
    vecs = {t: [1, 0.001 * i, 0] for i, t in enumerate(c1)} | {t: [0, 0.001 * i, 1] for i, t in enumerate(c2)} | {'lone': [0, 1, 0]}
    tbi = {'i1': c1[:3] + ['math4'], 'i2': c1[2:] + ['lone'], 'i3': c2, 'i4': ['math4', 'sent2']}
    rep = tag_clusters(tbi, Lookup(vecs))
    assert rep['sent0'] == 'sent2' and rep['math0'] == 'math4' and 'lone' not in rep   # most frequent of each cluster
    assert dedup_tags(tbi, Lookup(vecs)) == {'i1': ['sent2', 'math4'], 'i2': ['sent2', 'lone'], 'i3': ['math4'], 'i4': ['math4', 'sent2']}

def test_parse_tags_robust_or_loud():
    assert parse_tags('```json\n[{"tag": "A"}, "b"]\n```', 'i') == ['A', 'b']
    assert parse_tags('Tags: [{"tag": "x", "explanation": "y"}, {"tag": "z", "expl', 'i') == ['x']
    with pytest.raises(TagParseError) as e: parse_tags('no list here', 'Do the thing.')
    assert e.value.instruction == 'Do the thing.' and e.value.raw == 'no list here'
    assert "Do the thing." in str(e.value) and 'no list here' in str(e.value)

def test_taggers_cache_and_check(tmp_cache, tmp_path):
    t = OfflineTagger()
    tags = t.tag(['Summarize the article in one sentence.', 'Zork.'])
    assert tags['Zork.'] == ['zork'] and 'summarization' in tags['Summarize the article in one sentence.']
    assert json.loads((tmp_cache/'tags'/'offline-v1.json').read_text()) == tags
    (tmp_path/'t.json').write_text(json.dumps([{'instruction': 'A.', 'tags': [{'tag': 'x'}]}]))
    assert PrecomputedTagger(tmp_path/'t.json').tag(['A.']) == {'A.': ['x']}
    with pytest.raises(KeyError, match="'B.'"): PrecomputedTagger(tmp_path/'t.json').tag(['B.'])
    with pytest.raises(ValueError, match="unknown tagger 'gpt'"): get_tagger('gpt')
    with pytest.raises(ValueError, match='empty list'): t.tag([])

class FakeLM(LMTagger):
    "An LMTagger whose model answers from a script (no weights)."
    def __init__(self, answers): self.answers, self.key = answers, 'fake-lm'
    def raw_answer(self, instruction): return self.answers[instruction]

def test_lm_tagger_reports_unparsable(tmp_cache):
    lm = FakeLM({'Good.': '[{"tag": "ok"}]', 'Bad.': 'I cannot do that.'})
    assert lm.tag(['Good.']) == {'Good.': ['ok']}
    with pytest.raises(TagParseError, match="'Bad.'.*I cannot do that"): lm.tag(['Good.', 'Bad.'])
