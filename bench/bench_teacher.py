"""Teacher answer-word probabilities with k demonstrations: shared-prefix KV cache vs re-encoding the demos.

The ICL-distillation teacher reads the same k demonstrations before every query. `inscl.icl.answer_probs`
encodes that prefix once and reuses its KV cache; this script times it against encoding prefix + query
for every query (same batching, same last-position scoring), checks both give the same probabilities,
prints a small table and writes the measurements to bench/results/. Target: a speed-up of at least 5x
at k=16.

    python bench/bench_teacher.py                       # Gemma-3-270M, 200 queries, k=16
    python bench/bench_teacher.py --model smollm2-135m-instruct --n-queries 40
"""
import argparse, platform
from pathlib import Path
import numpy as np
import torch
from common import timed, add_common_args
from inscl.files import save_json
from inscl.icl import get_pattern, pattern_name, build_demos, answer_probs
from inscl.models import load_model
from inscl.nli_benchmark import builtin_nli

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--model', default='gemma3-270m', help='teacher model name for inscl.models.load_model')
    p.add_argument('--n-queries', type=int, default=200, help='queries scored with the cache')
    p.add_argument('--n-uncached', type=int, default=0, help='queries scored without the cache (0: the same as --n-queries); '
                   'times are compared per query')
    p.add_argument('--k', type=int, default=16, help='demonstrations in the shared prefix')
    p.add_argument('--pattern', default='gpt-3', help='prompt pattern (minimal, gpt-3, eval-harness, instruction, chat)')
    p.add_argument('--batch-size', type=int, default=8, help='queries per forward pass')
    p.add_argument('--data-seed', type=int, default=0, help='seed of the demonstration draw')
    return add_common_args(p).parse_args(argv)

def main(argv=None):
    a = parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    pattern_name(a.pattern)                                   # a bad name fails before the model loads
    (model, tok), t_load = timed(lambda: load_model(a.model))
    pat = get_pattern(a.pattern, tok)                          # `chat` is rendered from the model's template
    train = builtin_nli(seed=0, n=max(200, 4 * a.k), split='train')
    queries = builtin_nli(seed=1, n=a.n_queries, split='test')
    demos = build_demos(train, a.k, a.data_seed, exclude_ids=[q['id'] for q in queries])
    prefix = pat.prefix(demos)
    prompts = [pat.format(q['premise'], q['hypothesis']) for q in queries]
    n_unc = a.n_uncached or a.n_queries
    kw = dict(answers=pat.answers, prefix=prefix, batch_size=a.batch_size, progress=True)
    answer_probs(model, tok, prompts[:a.batch_size], **kw)  # warm-up (allocator, kernels)
    cached, t_cached = timed(lambda: answer_probs(model, tok, prompts, **kw))
    uncached, t_unc = timed(lambda: answer_probs(model, tok, prompts[:n_unc], use_cache=False, **kw))
    per_c, per_u = t_cached / len(prompts), t_unc / n_unc
    gold = np.array([q['gold'] for q in queries])
    lens = [len(tok(prefix + p)['input_ids']) for p in prompts]
    res = dict(model=a.model, k=a.k, pattern=pat.name, data_seed=a.data_seed, batch_size=a.batch_size,
               n_queries=len(prompts), n_uncached=n_unc, prefix_tokens=len(tok(prefix)['input_ids']),
               shared_tokens=cached.n_prefix, mean_prompt_tokens=float(np.mean(lens)),
               load_seconds=round(t_load, 2), cached_seconds=round(t_cached, 2), uncached_seconds=round(t_unc, 2),
               cached_ms_per_query=round(1000 * per_c, 1), uncached_ms_per_query=round(1000 * per_u, 1),
               speedup=round(per_u / per_c, 2),
               max_abs_diff_p=float(np.abs(cached.p[:n_unc] - uncached.p).max()),
               max_abs_diff_p_norm=float(np.abs(cached.p_norm[:n_unc] - uncached.p_norm).max()),
               accuracy=float((cached.pred == gold).mean()), non_answer_rate=cached.non_answer_rate,
               threads=torch.get_num_threads(), device=str(model.device), torch=torch.__version__,
               machine=platform.machine(), processor=platform.processor() or platform.machine())
    print(f"\n{a.model}: k={a.k} ({res['prefix_tokens']} prefix tokens, {res['mean_prompt_tokens']:.0f} tokens per full prompt), "
          f"batch {a.batch_size}, {torch.get_num_threads()} threads, load {t_load:.1f} s")
    print(f"{'':24}{'queries':>8}{'seconds':>10}{'ms/query':>10}")
    print(f"{'shared-prefix cache':24}{len(prompts):>8}{t_cached:>10.2f}{1000*per_c:>10.1f}")
    print(f"{'re-encode demos':24}{n_unc:>8}{t_unc:>10.2f}{1000*per_u:>10.1f}")
    print(f"speed-up {res['speedup']:.1f}x (target >= 5x); max |p cached - p uncached| = {res['max_abs_diff_p']:.2e}; "
          f"accuracy {res['accuracy']:.3f}, non-answer rate {res['non_answer_rate']:.3f}")
    out = save_json(res, Path(a.out)/f"bench_teacher-{a.model.replace('/', '_')}-k{a.k}.json")
    print(f'wrote {out}')
    return res

if __name__ == '__main__': main()
