"""Batched greedy generation vs one prompt at a time, on the embedded benchmark's test sets.

`inscl.evaluate.generate` sorts the prompts by length, left-pads them into batches and decodes with the KV
cache. This script times it against generating for one prompt at a time (no padding) on the same prompts,
counts the answers that differ between the two (left padding changes floating-point sums inside attention,
which can flip a greedy token), prints a small table and writes the measurements to bench/results/.
Target: a speed-up of at least 4x. Measure on an otherwise idle machine: with other processes on the cores,
torch's worker threads wait on each other and batched times degrade far more than unbatched ones (`--threads 1` helps).

    python bench/bench_generate.py                                   # tiny, all 256 test prompts
    python bench/bench_generate.py --model smollm2-135m-instruct --n 64
"""
import argparse, os, platform
from pathlib import Path
import numpy as np
import torch
from common import timed, add_common_args
from inscl.benchmark import builtin_superni
from inscl.evaluate import generate, rouge_l
from inscl.train import format_prompt
from inscl.files import save_json
from inscl.models import load_model
from inscl.presets import load_preset

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='tiny', help='model name for inscl.models.load_model')
    p.add_argument('--preset', default='tiny', help='preset whose inscl.max_new_tokens is used')
    p.add_argument('--max-new-tokens', type=int, default=0, help='answer length limit (0: the preset\'s)')
    p.add_argument('--n', type=int, default=0, help='test prompts (0: all of builtin_superni(seed=0)["test"])')
    p.add_argument('--batch-size', type=int, default=16, help='prompts per batched generate call')
    return add_common_args(p).parse_args(argv)

def main(argv=None):
    a = parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    load_before = os.getloadavg()[0]
    max_new = a.max_new_tokens or load_preset(a.preset).inscl.max_new_tokens
    (model, tok), t_load = timed(lambda: load_model(a.model, device='cpu'))
    test = builtin_superni(seed=0)['test']
    test = test[:a.n] if a.n else test
    prompts = [format_prompt(r) for r in test]
    generate(model, tok, prompts[:a.batch_size], max_new, a.batch_size, progress=False)  # warm-up
    batched, t_b = timed(lambda: generate(model, tok, prompts, max_new, a.batch_size, progress=True))
    single, t_s = timed(lambda: generate(model, tok, prompts, max_new, batch_size=1, progress=True))
    diff = [k for k, (x, y) in enumerate(zip(batched, single)) if x != y]
    lens = [len(x) for x in tok(prompts)['input_ids']]
    rl_b = float(np.mean([rouge_l(p, r['outputs']) for p, r in zip(batched, test)]))
    rl_s = float(np.mean([rouge_l(p, r['outputs']) for p, r in zip(single, test)]))
    res = dict(model=a.model, preset=a.preset, max_new_tokens=max_new, batch_size=a.batch_size, n_prompts=len(prompts),
               mean_prompt_tokens=float(np.mean(lens)), max_prompt_tokens=int(max(lens)),
               load_seconds=round(t_load, 2), batched_seconds=round(t_b, 2), single_seconds=round(t_s, 2),
               batched_ms_per_prompt=round(1000 * t_b / len(prompts), 1), single_ms_per_prompt=round(1000 * t_s / len(prompts), 1),
               speedup=round(t_s / t_b, 2), n_mismatch=len(diff), mismatch_rate=len(diff) / len(prompts),
               mismatches=[dict(index=k, id=test[k]['id'], batched=batched[k], single=single[k]) for k in diff[:20]],
               rougeL_batched=rl_b, rougeL_single=rl_s,
               load_average_before=round(load_before, 2), load_average_after=round(os.getloadavg()[0], 2),
               threads=torch.get_num_threads(), cpu_count=os.cpu_count(), device=str(model.device), torch=torch.__version__,
               machine=platform.machine(), processor=platform.processor() or platform.machine())
    print(f"\n{a.model}: {len(prompts)} prompts ({res['mean_prompt_tokens']:.0f} tokens on average, max {res['max_prompt_tokens']}), "
          f"max_new_tokens {max_new}, {torch.get_num_threads()} threads, load {t_load:.1f} s")
    print(f"{'':22}{'prompts':>8}{'seconds':>10}{'ms/prompt':>11}")
    print(f"{'batched (bs=%d)' % a.batch_size:22}{len(prompts):>8}{t_b:>10.2f}{1000*t_b/len(prompts):>11.1f}")
    print(f"{'one at a time':22}{len(prompts):>8}{t_s:>10.2f}{1000*t_s/len(prompts):>11.1f}")
    if max(load_before, os.getloadavg()[0]) > 0.8 * os.cpu_count():
        print(f"note: load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: other processes "
              "compete for the cores and the times (batched ones most) are not representative; try --threads 1")
    print(f"speed-up {res['speedup']:.1f}x (target >= 4x); answers that differ: {len(diff)} of {len(prompts)}; "
          f"ROUGE-L batched {rl_b:.2f}, one at a time {rl_s:.2f}")
    out = save_json(res, Path(a.out)/f"bench_generate-{a.model.replace('/', '_')}-bs{a.batch_size}-t{torch.get_num_threads()}.json")
    print(f'wrote {out}')
    return res

if __name__ == '__main__': main()
