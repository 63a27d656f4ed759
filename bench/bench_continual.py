"""One `tiny` continual stage sequence two ways in one process: the shipped training step, and a frozen copy of the
step as it was before packing (padded random batches, the full LM head, the for-loop AdamW), kept here as the baseline.

Both ways run the same stages (an order's first `--stages` tasks with a replay method and the preset's replay budget),
from the same initial weights, with the same seeded batches: per stage they train, evaluate the tasks seen, and save
a checkpoint, as `inscl.continual.run_continual` does. The pinned numerics of `inscl.batch.numerics_env` are set
before torch is imported, one thread. The way that runs first alternates between repeats.

    python bench/bench_continual.py [--stages 4] [--order curriculum] [--method random] [--repeats 1] [--phases]

Prints seconds per phase for both ways, the stage losses and ROUGE-L of both (they differ only by rounding), the
training step's achieved GFLOP/s against a one-thread fp32 matmul's, and last `speedup X.XXx` (baseline seconds /
shipped seconds, whole sequence). `--phases` adds a per-phase breakdown of one stage's optimizer steps (data,
forward, backward, optimizer) for both layouts. Writes bench/results/bench_continual.json."""
import argparse, json, math, os, statistics, sys, tempfile, time
from common import RESULTS, add_common_args

def _pin(threads:int):
    "Pinned numerics in this process (before torch is imported), as the runner sets them for a grid cell."
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
    from inscl.batch import numerics_env
    os.environ.update(numerics_env(threads))

# ---- the frozen baseline: the training step of commit 5eb149f (padded batches, full LM head, for-loop AdamW) ----
def baseline_train(model, tok, data, cfg):
    "The kit's `train` before packing, reduced to what the continual study uses (one process, full fine-tuning)."
    import numpy as np, torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import get_cosine_schedule_with_warmup
    from inscl.train import tokenize_records, random_batches, length_grouped_batches
    def collate(features, pad_id):
        n = max(len(f['input_ids']) for f in features)
        ids = torch.full((len(features), n), pad_id, dtype=torch.long)
        labels = torch.full((len(features), n), -100, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f['input_ids'])
            ids[i, :k] = torch.as_tensor(f['input_ids']); mask[i, :k] = 1; labels[i, :k] = torch.as_tensor(f['labels'])
        return {'input_ids': ids, 'attention_mask': mask, 'labels': labels}
    feats = tokenize_records(data, tok, cfg.max_len)
    rng = np.random.default_rng(cfg.seed)
    lengths = [len(f['input_ids']) for f in feats]
    plan = (lambda: length_grouped_batches(lengths, cfg.batch_size, rng)) if cfg.group_by_length else (lambda: random_batches(len(feats), cfg.batch_size, rng))
    batches = [b for _ in range(cfg.epochs) for b in plan()]
    n_sched = math.ceil(len(batches) / cfg.grad_accum)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, round(cfg.warmup_ratio * n_sched), n_sched)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision='no')
    dl = DataLoader(feats, batch_sampler=batches, collate_fn=lambda fs: collate(fs, tok.pad_token_id), num_workers=0)
    pmodel, opt, dl, sched = acc.prepare(model, opt, dl, sched)
    curve, window = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        pmodel.train()
        for batch in dl:
            with acc.accumulate(pmodel):
                loss = pmodel(**batch).loss
                value = loss.item()
                if not math.isfinite(value): raise FloatingPointError(f'loss is {value}')
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm: acc.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step(); sched.step(); opt.zero_grad()
            window.append(value)
            if acc.sync_gradients: curve.append(sum(window) / len(window)); window = []
    model = acc.unwrap_model(pmodel, keep_fp32_wrapper=False); acc.free_memory(); model.eval()
    return {'final_loss': curve[-1], 'steps': len(curve), 'tokens': sum(lengths) * cfg.epochs,
            'grid': sum(len(b) * max(lengths[i] for i in b) for b in batches)}
# ---- end of the frozen baseline ----

def _preset(a):
    "The `tiny` preset, with `--n-test` test examples per task if given."
    from inscl.presets import load_preset
    return load_preset('tiny', overrides={'inscl.n_test_per_task': a.n_test} if a.n_test else None)

def _tests(data, tasks):
    from collections import defaultdict
    by = defaultdict(list)
    for r in data['test']:
        if r['category'] in tasks: by[r['category']].append(r)
    return {t: by[t] for t in tasks}

def run_sequence(way:str, a) -> dict:
    "Train, evaluate and checkpoint the first `a.stages` stages; seconds per phase and the numbers of every stage."
    from inscl.presets import load_preset, seed_everything
    from inscl.continual import study_data, _stage_records
    from inscl.data import task_order
    from inscl.evaluate import evaluate_tasks
    from inscl.models import load_model
    from inscl.replay import replay_plan
    from inscl.train import train, TrainConfig
    p = _preset(a); data = study_data(p); tasks = task_order(a.order)[:a.stages]
    seed_everything(0)
    model, tok = load_model(p.inscl.model, preset=p.name, seed=p.seed)
    T, stages = {'plan': 0., 'train': 0., 'evaluate': 0., 'checkpoint': 0.}, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, task in enumerate(tasks):
            t = time.perf_counter()
            plan = replay_plan(tasks, i, a.method, records=data['train'], replay_per_task=p.inscl.replay_per_task,
                               weights=p.inscl.weights, encoder=p.inscl.encoder, tagger=p.inscl.tagger, seed=0)
            recs = _stage_records(data['train'], task, plan)
            cfg = TrainConfig.from_preset(p.inscl, seed=i)
            t1 = time.perf_counter(); T['plan'] += t1 - t
            if way == 'baseline': s = baseline_train(model, tok, recs, cfg)
            else:
                s = train(model, tok, recs, cfg, progress=False)
                s['grid'] = round(s['tokens'] / (1 - s['pad_fraction']))
            t2 = time.perf_counter(); T['train'] += t2 - t1
            scores = evaluate_tasks(model, tok, _tests(data, tasks[:i + 1]), p.inscl.max_new_tokens, progress=False)
            t3 = time.perf_counter(); T['evaluate'] += t3 - t2
            d = os.path.join(tmp, f'{way}-{i:02d}'); model.save_pretrained(d); tok.save_pretrained(d)
            T['checkpoint'] += time.perf_counter() - t3
            stages.append(dict(task=task, final_loss=s['final_loss'], steps=s['steps'], tokens=s['tokens'], grid=s['grid'],
                               rougeL=[round(float(x['rougeL']), 4) for x in scores]))
    return dict(way=way, seconds=T, total=sum(T.values()), stages=stages, n_params=sum(q.numel() for q in model.parameters()),
                n_head=model.get_output_embeddings().weight.numel())

def matmul_ceiling(n:int=2048) -> float:
    "GFLOP/s of an n x n fp32 matmul on this process's threads: the roofline the training step is measured against."
    import torch
    x, y = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2): x @ y
    reps, t = 8, time.perf_counter()
    for _ in range(reps): x @ y
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9

def step_gflop(r:dict) -> float:
    "Useful training FLOPs (forward + backward = 6 per parameter per token on the decoder; the head on target tokens is left out) in GFLOP."
    body = r['n_params'] - r['n_head']            # tied embeddings: the input lookup costs nothing
    return sum(6 * body * s['tokens'] for s in r['stages']) / 1e9

def phases(a) -> dict:
    "Seconds per phase of one stage's optimizer steps, padded (baseline layout) and packed (shipped), timed by hand."
    import numpy as np, torch
    from inscl.presets import load_preset
    from inscl.continual import study_data, _stage_records
    from inscl.data import task_order
    from inscl.models import load_model
    from inscl.replay import replay_plan
    from inscl.train import TrainConfig, tokenize_records, random_batches, collate, pack, TargetLM, lm_loss, _adamw
    p = _preset(a); data = study_data(p); tasks = task_order(a.order)
    i = min(a.stages, len(tasks)) - 1
    plan = replay_plan(tasks, i, a.method, records=data['train'], replay_per_task=p.inscl.replay_per_task, seed=0)
    cfg = TrainConfig.from_preset(p.inscl, seed=i)
    out = {}
    for layout in ('padded', 'packed'):
        model, tok = load_model(p.inscl.model, preset=p.name, seed=p.seed)
        feats = tokenize_records(_stage_records(data['train'], tasks[i], plan), tok, cfg.max_len)
        batches = [b for _ in range(cfg.epochs) for b in random_batches(len(feats), cfg.batch_size, np.random.default_rng(0))]
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr) if layout == 'padded' else _adamw(list(model.parameters()), cfg)
        net = model if layout == 'padded' else TargetLM(model)
        T = dict(data=0., forward=0., backward=0., optimizer=0.)
        model.train()
        for b in batches:
            t0 = time.perf_counter()
            fs = [feats[j] for j in b]
            bt = collate(fs, tok.pad_token_id) if layout == 'padded' else pack(fs, tok.pad_token_id, cfg.max_len)
            t1 = time.perf_counter(); loss = lm_loss(net, bt) if layout == 'padded' else net(**bt)
            t2 = time.perf_counter(); loss.backward()
            t3 = time.perf_counter(); torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm); opt.step(); opt.zero_grad()
            t4 = time.perf_counter()
            for k, x, y in (('data', t0, t1), ('forward', t1, t2), ('backward', t2, t3), ('optimizer', t3, t4)): T[k] += y - x
        out[layout] = {k: round(v, 3) for k, v in T.items()}
        out[layout]['steps'] = len(batches)
    return out

def main():
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument('--stages', type=int, default=4, help='stages of the order trained (the tiny study has 16)')
    ap.add_argument('--order', default='curriculum', help='task order')
    ap.add_argument('--method', default='random', help='replay method')
    ap.add_argument('--repeats', type=int, default=1, help='pairs of runs (the first way alternates)')
    ap.add_argument('--n-test', type=int, default=0, help="test examples per task (0: the preset's)")
    ap.add_argument('--phases', action='store_true', help='also time data/forward/backward/optimizer of one stage')
    a = ap.parse_args()
    _pin(a.threads or 1)
    import torch
    torch.set_num_threads(a.threads or 1)
    runs = []
    for k in range(a.repeats):
        for way in (('baseline', 'shipped') if k % 2 == 0 else ('shipped', 'baseline')): runs.append(run_sequence(way, a))
    ceiling = matmul_ceiling()
    by = {w: [r for r in runs if r['way'] == w] for w in ('baseline', 'shipped')}
    print(f"{'phase':<12}{'baseline s':>12}{'shipped s':>12}")
    for ph in runs[0]['seconds']:
        print(f"{ph:<12}{statistics.median(r['seconds'][ph] for r in by['baseline']):>12.2f}{statistics.median(r['seconds'][ph] for r in by['shipped']):>12.2f}")
    for w in by:
        r = by[w][0]; gf = step_gflop(r)
        print(f"{w}: {sum(s['tokens'] for s in r['stages'])} tokens in a grid of {sum(s['grid'] for s in r['stages'])}, "
              f"{gf / statistics.median(x['seconds']['train'] for x in by[w]):.1f} useful GFLOP/s in training (ceiling {ceiling:.1f}, fp32 matmul, "
              f"{a.threads or 1} thread)")
    for sb, ss in zip(by['baseline'][0]['stages'], by['shipped'][0]['stages']):
        print(f"  {sb['task']:<24} loss {sb['final_loss']:.6f} / {ss['final_loss']:.6f}   rougeL {sb['rougeL']} / {ss['rougeL']}")
    ph = phases(a) if a.phases else None
    if ph:
        for layout, T in ph.items(): print(f"phases of one stage, {layout}: " + ', '.join(f'{k} {v}' for k, v in T.items()))
    ratios = [b['total'] / s['total'] for b, s in zip(by['baseline'], by['shipped'])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS/'bench_continual.json').write_text(json.dumps(dict(args=vars(a), runs=runs, ceiling_gflops=ceiling, phases=ph, ratios=ratios), indent=1))
    print(f"speedup {statistics.median(ratios):.2f}x")

if __name__ == '__main__': main()
