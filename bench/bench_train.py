"""Tokens per second of the kit's training loop against HF `Trainer` with its defaults.

Same model (`tiny` from inscl.models, the same initial weights), same data (the embedded benchmark's
training records, formatted by `inscl.train.tokenize_records`), same batch size, epochs, learning rate,
cosine schedule, warmup and clipping, same machine, one run each. Trainer keeps its defaults: a random
sampler (no `group_by_length`) and `DataCollatorForSeq2Seq` padding (right side); dataloader workers 0
for both. Only non-padding tokens (prompt + target) count; seconds are the wall time of the call that
trains. Target: the kit at least 1.3x Trainer's tokens/s. A third row, the kit's loop with random
batches (`group_by_length=False`), separates the loop's own overhead from the padding saved.

    python bench/bench_train.py [--model tiny] [--epochs 2] [--batch-size 16] [--threads 0] [--tag NAME]

Prints a table and writes bench/results/train-<model>[-<tag>].json."""
import argparse, os, platform, tempfile, time, warnings
from pathlib import Path

def _warm_up(model, tok, feats, collate):
    "One forward/backward on a copy so neither timed run pays for first-call initialisation."
    import copy
    m = copy.deepcopy(model).train()
    m(**collate(feats[:4], tok.pad_token_id)).loss.backward()

def run_kit(model, tok, feats, args, group_by_length=True) -> dict:
    from inscl.train import TrainConfig, train
    cfg = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, warmup_ratio=args.warmup_ratio,
                      max_len=args.max_len, seed=0, group_by_length=group_by_length)
    t0 = time.perf_counter()
    stats = train(model, tok, feats, cfg, progress=False)
    return {'seconds': time.perf_counter() - t0, 'steps': stats['steps'], 'mean_loss': sum(stats['loss']) / len(stats['loss']),
            'pad_fraction': stats['pad_fraction']}

def run_trainer(model, tok, feats, args) -> dict:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    tok.padding_side = 'right'
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=args.epochs,
                                  learning_rate=args.lr, lr_scheduler_type='cosine', warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio
                                  max_grad_norm=1.0, weight_decay=0.0, seed=0, use_cpu=True, report_to=[],
                                  save_strategy='no', dataloader_num_workers=0, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=feats,
                          data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
        t0 = time.perf_counter()
        res = trainer.train()
        secs = time.perf_counter() - t0
    return {'seconds': secs, 'steps': res.global_step, 'mean_loss': res.training_loss, 'pad_fraction': None}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='tiny', help="a model name of inscl.models ('tiny', 'tiny-smoke', ...)")
    ap.add_argument('--epochs', type=int, default=2, help='epochs (tiny preset: 2)')
    ap.add_argument('--batch-size', type=int, default=16, help='examples per batch (tiny preset: 16)')
    ap.add_argument('--lr', type=float, default=1e-3, help='peak learning rate (tiny preset: 1e-3)')
    ap.add_argument('--warmup-ratio', type=float, default=0.03, help='share of steps in warmup')
    ap.add_argument('--max-len', type=int, default=128, help='longest example in tokens (tiny preset: 128)')
    ap.add_argument('--threads', type=int, default=0, help='torch intra-op threads (0: torch default)')
    ap.add_argument('--tag', default='', help='suffix of the results file')
    args = ap.parse_args()
    warnings.filterwarnings('ignore')
    import numpy as np, torch
    from inscl.benchmark import builtin_superni
    from inscl.files import save_json
    from inscl.models import load_model
    from inscl.train import collate, random_batches, pad_fraction, tokenize_records
    if args.threads: torch.set_num_threads(args.threads)
    _, tok = load_model(args.model, device='cpu')
    feats = tokenize_records(builtin_superni()['train'], tok, args.max_len)
    lengths = [len(f['input_ids']) for f in feats]
    tokens = sum(lengths) * args.epochs
    _warm_up(load_model(args.model, device='cpu')[0], tok, feats, collate)

    rows = {}
    kit_random = lambda *a: run_kit(*a, group_by_length=False)
    for name, run in (('kit', run_kit), ('hf_trainer', run_trainer), ('kit_random', kit_random)):
        model, tok = load_model(args.model, device='cpu', seed=0)
        rows[name] = {**run(model, tok, feats, args), 'tokens': tokens}
        rows[name]['tokens_per_s'] = tokens / rows[name]['seconds']
        del model
    rows['hf_trainer']['pad_fraction'] = float(np.mean([pad_fraction(lengths, random_batches(len(lengths), args.batch_size, s))
                                                        for s in range(5)]))  # expected, random batches
    ratio = rows['kit']['tokens_per_s'] / rows['hf_trainer']['tokens_per_s']

    print(f"{args.model}: {len(feats)} examples x {args.epochs} epochs, batch {args.batch_size}, "
          f"{tokens} non-pad tokens, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'loop':<12}{'seconds':>9}{'steps':>7}{'tokens/s':>10}{'pad share':>11}{'mean loss':>11}")
    for name, r in rows.items():
        print(f"{name:<12}{r['seconds']:>9.1f}{r['steps']:>7}{r['tokens_per_s']:>10.0f}{r['pad_fraction']:>11.3f}{r['mean_loss']:>11.3f}")
    print(f"ratio kit / Trainer: {ratio:.2f}x (target >= 1.3x); kit with random batches / Trainer: "
          f"{rows['kit_random']['tokens_per_s'] / rows['hf_trainer']['tokens_per_s']:.2f}x")
    out = Path(__file__).resolve().parent/'results'/f"train-{args.model}{'-' + args.tag if args.tag else ''}.json"
    save_json({'model': args.model, 'n_examples': len(feats), 'epochs': args.epochs, 'batch_size': args.batch_size,
               'max_len': args.max_len, 'tokens': tokens, 'runs': rows, 'ratio': ratio,
               'torch_threads': torch.get_num_threads(), 'load_average_1min': os.getloadavg()[0],
               'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'torch': torch.__version__}}, out)
    print(f'wrote {out}')

if __name__ == '__main__': main()
