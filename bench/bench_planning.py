"""Time InsCL replay planning at paper-like size: all 16 stages of the curriculum order.

Synthetic benchmark (the real SuperNI data is not needed to time the planner): 16 tasks, ~60 unique
instructions each, ~5,000 distinct raw tags, `replay_per_task=200`, 2,400 training records per task.
Embeddings and tags are cached before timing (a warm-up call fills the caches; its time is reported
separately). Encoder: real MiniLM (`--encoder minilm`, default) or random unit vectors (`--encoder hash`).

    python bench/bench_planning.py [--encoder minilm|hash] [--method inscl] [--per-task 2400]

Prints a table and writes bench/results/planning-<encoder>-<method>.json."""
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path
import numpy as np

HEADS = ('classification sentiment grammar code execution detection comprehension answer extraction dialogue '
         'rewriting summary title arithmetic counting reasoning translation paraphrase negation entity date email '
         'keyword topic style tone fact definition comparison ordering sorting parsing formatting spelling rhyme '
         'story question hypothesis premise evidence opinion review tweet recipe poem list table chart equation '
         'program function variable loop string number unit currency time place person organization event emotion '
         'sarcasm toxicity bias humor intent slot command plan step rule constraint length choice option label '
         'score rating rank similarity overlap coherence fluency relevance novelty safety privacy citation source '
         'claim argument stance conclusion cause effect analogy metaphor').split()
MODS = ('binary multi fine coarse short long formal informal english structured free open closed numeric textual '
        'lexical semantic syntactic logical temporal spatial causal social medical legal financial scientific '
        'historical literary technical casual exact approximate single multiple nested first last simple complex '
        'positive negative neutral implicit explicit local global partial full').split()
VERBS = 'classify identify extract generate rewrite summarize answer detect evaluate count compute translate compare rank explain list'.split()
OBJECTS = ('the sentence|the review|the passage|the dialogue|the code snippet|the question|the list of numbers|the tweet|'
           'the article|the story|the claim|the table|the equation|the email|the recipe|the poem').split('|')

def synthetic(n_tasks=16, n_ins=60, per_task=2400, n_tags=5100, seed=0):
    "Records, raw tags per instruction, and task names: a paper-sized stand-in for SuperNI."
    rng = np.random.default_rng(seed)
    vocab = [f'{m} {h}' for h in HEADS for m in MODS][:n_tags]
    variants = lambda t: [t, t.title(), t.replace(' ', '-'), t + 's']
    tasks = [f'Task{i:02d}' for i in range(n_tasks)]
    records, tags = [], {}
    order = rng.permutation(len(vocab))
    common, chunks = order[:100], np.array_split(order[100:], n_tasks)   # a few frequent tags, then each task's own
    for i, t in enumerate(tasks):
        verbs = rng.choice(VERBS, 3, replace=False); objs = rng.choice(OBJECTS, 3, replace=False)
        ins, fresh = [], list(chunks[i])
        for k in range(n_ins):
            s = (f"{rng.choice(verbs).capitalize()} {rng.choice(objs)} ({t}, variant {k})"
                 + ''.join(f" and {rng.choice(VERBS)} {rng.choice(OBJECTS)}" for _ in range(int(rng.integers(0, 3)))) + '.')
            ins.append(s)
            picks = [fresh.pop() if fresh and rng.random() < 0.8 else int(rng.choice(common)) for _ in range(int(rng.integers(4, 10)))]
            tags[s] = list(dict.fromkeys(variants(vocab[j])[int(rng.integers(4)) if rng.random() < 0.15 else 0] for j in picks))
        p = rng.dirichlet(np.full(n_ins, 0.7))                                       # uneven instruction shares
        counts = np.maximum(1, np.round(p * per_task).astype(int))
        for k, c in enumerate(counts):
            records += [{'category': t, 'instruction': ins[k], 'input': '', 'outputs': [''], 'id': f'{t}-{k}-{j}'} for j in range(c)]
    return records, tags, tasks

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--encoder', default='minilm', help="'minilm' (real MiniLM, cached) or 'hash' (random unit vectors)")
    ap.add_argument('--method', default='inscl', help='replay method to time')
    ap.add_argument('--per-task', type=int, default=2400, help='training records per task')
    ap.add_argument('--replay-per-task', type=int, default=200, help='replay budget per previous task')
    args = ap.parse_args()
    from inscl.replay import replay_plan
    from inscl.insinfo import PrecomputedTagger
    from inscl.files import save_json
    records, tags, tasks = synthetic(per_task=args.per_task)
    n_distinct = len({x for v in tags.values() for x in v})
    tagfile = Path(tempfile.mkdtemp())/'tags.json'
    tagfile.write_text(json.dumps(tags))
    tagger = PrecomputedTagger(tagfile)                     # tags on disk: the "cached" state
    kw = dict(records=records, replay_per_task=args.replay_per_task, encoder=args.encoder, tagger=tagger, seed=0)
    import torch
    print(f"{len(tasks)} tasks, {len(tags)} unique instructions, {n_distinct} distinct raw tags, {len(records)} records; "
          f"encoder={args.encoder}, method={args.method}, torch threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
    t0 = time.perf_counter()
    replay_plan(tasks, len(tasks) - 1, args.method, **kw)    # warm-up: fills the embedding cache for all instructions and tags
    warm = time.perf_counter() - t0
    rows = []
    for i in range(len(tasks)):
        t0 = time.perf_counter()
        p = replay_plan(tasks, i, args.method, **kw)
        dt = time.perf_counter() - t0
        rows.append({'stage': i, 'seconds': round(dt, 3), 'replayed': p['total'],
                     'max_n_j': max(p['budget'].values(), default=0), 'min_n_j': min(p['budget'].values(), default=0)})
    print(f"warm-up (model load + encoding everything once): {warm:.1f} s")
    print(f"{'stage':>5} {'seconds':>8} {'replayed':>9} {'min n_j':>8} {'max n_j':>8}")
    for r in rows: print(f"{r['stage']:>5} {r['seconds']:>8.3f} {r['replayed']:>9} {r['min_n_j']:>8} {r['max_n_j']:>8}")
    secs = [r['seconds'] for r in rows]
    print(f"mean {np.mean(secs):.3f} s/stage, max {max(secs):.3f} s/stage (target < 2 s)")
    out = Path(__file__).resolve().parent/'results'/f'planning-{args.encoder}-{args.method}.json'
    save_json({'encoder': args.encoder, 'method': args.method, 'n_tasks': len(tasks), 'n_instructions': len(tags),
               'n_distinct_tags': n_distinct, 'n_records': len(records), 'replay_per_task': args.replay_per_task,
               'warmup_seconds': round(warm, 2), 'mean_seconds_per_stage': round(float(np.mean(secs)), 3),
               'max_seconds_per_stage': round(max(secs), 3), 'stages': rows, 'cpus': os.cpu_count(),
               'python': sys.version.split()[0], 'machine': platform.machine()}, out)
    print(f"wrote {out}")

if __name__ == '__main__': main()
