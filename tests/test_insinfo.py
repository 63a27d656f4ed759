"InsInfo: taggers and their cache, DBSCAN dedup of every cluster."
import json
import numpy as np
import pytest
from inscl.embeddings import Encoder
from inscl.insinfo import dedup_tags, TagParseError, OfflineTagger, PrecomputedTagger, LMTagger, get_tagger, tag_clusters

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
