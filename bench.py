"""bench.py — one GRPO step of grpo.py against TRL's GRPOTrainer: same model, data and settings, on CPU.

    pip install trl==1.16.0        # the bench only; pulls accelerate, datasets, pandas, pyarrow; leaves torch alone
    python bench.py                # 4 rounds, each one run per side (8 steps, the first 2 dropped), ABBA order

Both sides train the tiny Qwen2.5-VL (`tiny.build_tiny()`) on the same prompts in the same order (grpo.py's
few-shot split of the synthetic set: choice questions, `--shots` normal template images + the query image; TRL gets
them in its VLM format and tokenizes them to the same ids and pixels), with G completions per prompt, P prompts per
step, the same max completion length, temperature 1, vision tokens suppressed, reward accuracy + ROAM, β = 0.04,
ε = 0.2, the per-sequence loss (TRL loss_type="grpo"), AdamW (lr 3e-4, β2 0.99), grad clip 1, gradient
checkpointing, fp32, and the same number of torch threads.

Each run is its own process (`python bench.py --side ours|trl [--json]`), so its peak RSS is its own; the parent
alternates them (ours, trl, trl, ours, ...) so that changes in machine load hit both sides alike. Printed: median
seconds per step, wall and CPU (the process's own CPU time, which other processes' load barely moves); completion
tokens per second (mean tokens per step, up to and including the end of turn, over the median step); peak RSS;
the ratios ours/TRL; where a step's time goes on each side (exclusive: time in a phase nested inside another
counts once); and the machine with its load average.
"""
import argparse
import collections
import contextlib
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import anomalyr1
import tiny
import grpo
import roam
import runs

# ----------------------------------------------------------------------------- the shared setting


def ours_config(args, out):
    """The grpo.Config both sides follow; trl_config copies its numbers."""
    return grpo.resolve(grpo.Config(
        model="tiny", group_size=args.group_size, prompts_per_step=args.prompts, steps=args.steps,
        max_completion=args.max_completion, shots=args.shots, temperature=1.0, beta=0.04, clip_eps=0.2, norm="seq",
        rewards="accuracy,roam", lr=3e-4, warmup_steps=2, max_grad_norm=1.0, grad_checkpointing=True, out=out,
        save_every=args.steps))


def trl_config(cfg, out, processor):
    from trl import GRPOConfig
    return GRPOConfig(
        output_dir=out, use_cpu=True, bf16=False, seed=cfg.seed, max_steps=cfg.steps,
        per_device_train_batch_size=cfg.group_size * cfg.prompts_per_step,  # TRL counts completions, not prompts
        num_generations=cfg.group_size, max_completion_length=cfg.max_completion, temperature=cfg.temperature,
        beta=cfg.beta, epsilon=cfg.clip_eps, loss_type="grpo", scale_rewards="group",
        learning_rate=cfg.lr, lr_scheduler_type="constant_with_warmup", warmup_steps=cfg.warmup_steps,
        adam_beta2=0.99, weight_decay=0.0, max_grad_norm=cfg.max_grad_norm,
        gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
        shuffle_dataset=False,  # the dataset already holds grpo.py's prompts in grpo.py's order
        # as anomalyr1.generate: a sampled vision token would break the next forward
        generation_kwargs={"suppress_tokens": [anomalyr1.special_id(processor, t) for t in anomalyr1.VISION_TOKENS]},
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)


def trl_row(sample, shots, templates):
    """TRL's VLM dataset format: chat messages with bare {"type": "image"} slots, the images in an "images" column."""
    messages = anomalyr1.build_messages(sample, shots, templates)
    paths = [part["image"] for m in messages for part in m["content"] if part["type"] == "image"]
    for m in messages:
        m["content"] = [{"type": "image"} if part["type"] == "image" else part for part in m["content"]]
    return {"prompt": messages, "images": [anomalyr1.load_image(p) for p in paths],
            "answer": sample.answer, "options": json.dumps(sample.options)}


# ----------------------------------------------------------------------------- exclusive time per phase

PHASES = collections.defaultdict(float)  # phase -> seconds, running total
_open = []  # phases entered and not left: [name, start, seconds spent in phases nested inside]


def enter(name):
    _open.append([name, time.perf_counter(), 0.0])


def leave(*_):
    name, start, nested = _open.pop()
    total = time.perf_counter() - start
    PHASES[name] += total - nested
    if _open:
        _open[-1][2] += total


@contextlib.contextmanager
def phase(name):
    enter(name)
    try:
        yield
    finally:
        leave()


def timed(owner, attr, name):
    """Wrap owner.attr so that its time counts toward `name` (a string, or a function giving one)."""
    fn = getattr(owner, attr)

    @functools.wraps(fn)
    def wrapper(*a, **k):
        with phase(name() if callable(name) else name):
            return fn(*a, **k)
    setattr(owner, attr, wrapper)


def logp_phase():
    return "logp fwd (policy)" if torch.is_grad_enabled() else "logp no-grad (ref)"


def instrument_both():
    """The phases both sides reach through the same code: processor, backward, optimizer."""
    from transformers import Qwen2_5_VLProcessor
    timed(Qwen2_5_VLProcessor, "__call__", "processor")  # image resize + tokenize
    timed(Qwen2_5_VLProcessor, "apply_chat_template", "processor")
    timed(anomalyr1, "load_image", "processor")
    timed(torch.Tensor, "backward", "backward")  # with checkpointing this includes the recomputed forward
    timed(torch.nn.utils, "clip_grad_norm_", "optimizer")
    register_optimizer_step_pre_hook(lambda *_: enter("optimizer"))
    register_optimizer_step_post_hook(leave)


# ----------------------------------------------------------------------------- one side, in this process

def run_ours(args, out):
    """grpo.py's training step, timed here: the same public functions grpo.train calls, in the same order (metrics
    rows and checkpoints left out). A step runs from its seeding to the end of its optimizer step."""
    instrument_both()
    timed(anomalyr1, "packed_logprobs", logp_phase)
    cfg = ours_config(args, out)
    rank, world, device = runs.setup_distributed()
    torch.set_num_threads(args.threads)  # grpo.py sets cores / local processes; the bench gives both sides --threads
    checkpoint, train_set, _ = grpo.prepare_run(cfg, world, device)
    policy, ref, processor = grpo.build_models(cfg, device, weights=checkpoint)
    optimizer = grpo.adamw(policy, cfg)
    class_counts, marks, tokens = collections.Counter(), [mark()], []
    for step in range(1, cfg.steps + 1):
        runs.seed_step(cfg, step, rank)
        grpo.set_lr(optimizer, cfg, step)
        prompts = runs.step_prompts(train_set, cfg, step)
        class_counts.update(s.label for s in prompts)
        with phase("generate"):
            ids, texts, mask, batches = grpo.rollout(policy, processor, prompts, cfg)
        with phase("reward"):
            total, _, _ = grpo.score(prompts, texts, processor, cfg, class_counts)
        advantages = grpo.group_advantages(total, cfg.group_size)
        grpo.train_step(policy, ref, optimizer, batches, ids, mask, advantages, cfg, device)
        marks.append(mark())
        tokens.append(mask.sum().item())
    return steps_between(marks, tokens)


def run_trl(args, out):
    """TRL's GRPOTrainer. A step is the time from one optimizer step's end to the next; the reward counts tokens."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer
    torch.set_num_threads(args.threads)
    instrument_both()
    timed(GRPOTrainer, "_generate", "generate")
    timed(GRPOTrainer, "_calculate_rewards", "reward")
    timed(GRPOTrainer, "_get_per_token_logps_and_entropies", logp_phase)
    cfg = ours_config(args, os.path.join(out, "unused"))
    tokens, marks = [], []

    def reward(fn):
        def score(completions, answer, options, completion_ids, **_):
            if fn is roam.accuracy_reward:  # once per step: completion tokens up to and including the end of turn
                tokens.append(sum(len(ids) for ids in completion_ids))
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            return [fn(text, a, json.loads(o)) for text, a, o in zip(texts, answer, options)]
        score.__name__ = fn.__name__
        return score

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks.append(mark())
        on_step_end = on_train_begin

    dataset = Dataset.from_list([trl_row(s, cfg.shots, cfg.templates) for s in step_samples(cfg)])
    model, processor = anomalyr1.load(tiny.build_tiny(), device="cpu", dtype=torch.float32)
    # TRL stops and masks at the tokenizer's eos. The tiny tokenizer's is <|endoftext|>; Qwen2.5-VL-Instruct's, and
    # the one anomalyr1.generate stops at, is the end of turn.
    processor.tokenizer.eos_token = anomalyr1.END_OF_TURN
    trainer = GRPOTrainer(model=model, processing_class=processor, train_dataset=dataset, callbacks=[Clock()],
                          reward_funcs=[reward(roam.accuracy_reward), reward(roam.roam_reward)],
                          args=trl_config(cfg, out, processor))
    trainer.remove_callback(PrinterCallback)  # it prints every step's logs to stdout, where our JSON goes
    trainer.train()
    return steps_between(marks, tokens)


def step_samples(cfg):
    """The samples grpo.train uses, step after step."""
    train_set, _ = grpo.load_data(cfg)
    return [s for step in range(1, cfg.steps + 1) for s in runs.step_prompts(train_set, cfg, step)]


def mark():
    return time.perf_counter(), time.process_time(), dict(PHASES)


def steps_between(marks, tokens):
    """Per step: wall seconds, CPU seconds of this process (robust to other processes' load), tokens, phases."""
    return [{"seconds": b[0] - a[0], "cpu": b[1] - a[1], "tokens": n,
             "phases": {k: v - a[2].get(k, 0.0) for k, v in b[2].items() if v > a[2].get(k, 0.0)}}
            for a, b, n in zip(marks, marks[1:], tokens)]


def child(args):
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"bench-{args.side}-") as out:
        steps = (run_ours if args.side == "ours" else run_trl)(args, out)
    result = {"side": args.side, "steps": steps, "threads": torch.get_num_threads(), "load": [load, os.getloadavg()[0]],
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux reports KiB
    if args.json:
        print(json.dumps(result))
        return
    for i, s in enumerate(steps, 1):
        print(f"{args.side} step {i}: {s['seconds']:.3f} s ({s['cpu']:.3f} s CPU), {s['tokens']:.0f} tokens; " +
              ", ".join(f"{k} {v:.3f}" for k, v in sorted(s["phases"].items(), key=lambda kv: -kv[1])))
    print(f"peak RSS {result['peak_rss_mb']:.0f} MB, {result['threads']} torch thread(s)")


# ----------------------------------------------------------------------------- the race

def side_run(args, side):
    flags = [f"--{k.replace('_', '-')}={getattr(args, k)}"
             for k in ("group_size", "prompts", "max_completion", "shots", "steps", "threads")]
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--side", side, "--json", *flags],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: the {side} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(runs, warmup):
    steps = [s for r in runs for s in r["steps"][warmup:]]  # a run's first steps warm caches and allocators
    names = {k for s in steps for k in s["phases"]}
    phases = {k: statistics.median(s["phases"].get(k, 0.0) for s in steps) for k in names}
    phases["other"] = statistics.median(s["seconds"] - sum(s["phases"].values()) for s in steps)
    r = {"s_step": statistics.median(s["seconds"] for s in steps), "cpu_step": statistics.median(s["cpu"] for s in steps),
         "tokens_step": statistics.mean(s["tokens"] for s in steps), "n": len(steps), "phases": phases,
         "rss": statistics.median(r["peak_rss_mb"] for r in runs)}
    # per median step: one step slowed down by a burst of other processes' load does not move it
    return {**r, "tok_s": r["tokens_step"] / r["s_step"], "tok_cpu_s": r["tokens_step"] / r["cpu_step"]}


def race(args):
    import transformers
    import trl  # fail before any run, with the install hint
    runs = {"ours": [], "trl": []}
    for i in range(args.rounds):
        for side in ("ours", "trl")[::1 if i % 2 == 0 else -1]:  # ABBA: neither side always goes first
            runs[side].append(side_run(args, side))
            r = summarize(runs[side][-1:], args.warmup)
            print(f"round {i + 1}/{args.rounds} {side}: {r['s_step']:.3f} s/step, {r['cpu_step']:.3f} CPU s/step, "
                  f"load {runs[side][-1]['load'][0]:.1f}", file=sys.stderr)
    o, t = (summarize(runs[side], args.warmup) for side in ("ours", "trl"))
    # the two runs of a round ran back to back, under about the same load
    paired = statistics.median(summarize([a], args.warmup)["tok_s"] / summarize([b], args.warmup)["tok_s"]
                               for a, b in zip(runs["ours"], runs["trl"]))
    print(f"\nGRPO step on CPU: tiny Qwen2.5-VL, {args.prompts} prompts x G={args.group_size}, max {args.max_completion} "
          f"new tokens, {args.shots} template + 1 query image, beta 0.04, gradient checkpointing, fp32")
    print(f"{'':5} {'s/step':>7} {'CPU s/step':>11} {'tokens/step':>12} {'tokens/s':>9} {'tokens/CPU-s':>13} "
          f"{'peak RSS MB':>12} {'steps':>6}")
    for side, r in (("ours", o), ("TRL", t)):
        print(f"{side:5} {r['s_step']:7.3f} {r['cpu_step']:11.3f} {r['tokens_step']:12.1f} {r['tok_s']:9.1f} "
              f"{r['tok_cpu_s']:13.1f} {r['rss']:12.0f} {r['n']:6d}")
    print(f"ours/TRL: throughput {o['tok_s'] / t['tok_s']:.2f}x (median of the rounds' pairs {paired:.2f}x), per CPU "
          f"second {o['tok_cpu_s'] / t['tok_cpu_s']:.2f}x; peak RSS {o['rss'] / t['rss']:.2f}x")
    print("\nwhere a step goes, median wall seconds (exclusive):")
    for k in sorted(o["phases"].keys() | t["phases"].keys(), key=lambda k: (k == "other", -o["phases"].get(k, 0))):
        print(f"  {k:20} ours {o['phases'].get(k, 0.0):6.3f}   TRL {t['phases'].get(k, 0.0):6.3f}")
    loads = [x for r in runs["ours"] + runs["trl"] for x in r["load"]]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, {runs['ours'][0]['threads']} torch thread(s) per side, "
          f"1-min load average {min(loads):.1f}-{max(loads):.1f} during the runs; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, trl {trl.__version__}, python {platform.python_version()}")


def main(argv=None):
    p = argparse.ArgumentParser(description="A GRPO step of grpo.py vs TRL's GRPOTrainer (pip install trl==1.16.0)")
    p.add_argument("--group-size", type=int, default=4, help="G, completions per prompt")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--max-completion", type=int, default=32, help="max new tokens per completion")
    p.add_argument("--shots", type=int, default=1, help="normal template images shown before the query image")
    p.add_argument("--steps", type=int, default=8, help="steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps of every run left out")
    p.add_argument("--rounds", type=int, default=4, help="rounds, one run per side each (even: ABBA balances)")
    # 1: on the shared 2-core machine this was written on, both sides ran 10-20x slower with 2 threads (OpenMP
    # threads spin and wait for each other while other processes hold the cores), and 128-wide matmuls gain little
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same for both sides")
    p.add_argument("--side", choices=["ours", "trl"], help="run one side in this process (the parent calls this)")
    p.add_argument("--json", action="store_true", help="with --side: print the result as one JSON line")
    args = p.parse_args(argv)
    if args.side:
        return child(args)
    try:
        race(args)
    except ImportError as e:
        sys.exit(f"error: {e}; the bench needs TRL: pip install trl==1.16.0")


if __name__ == "__main__":
    main()
