"""watch.py: what a GRPO run shows a reader while and after it trains (grpo.py calls it).

    OUT/metrics.jsonl   one row per step (metrics_row: rewards, accuracy, consistency, KL, ... over all ranks), and
                        heldout_* keys (%, as eval.py reports them): macro accuracy, Anomaly Detection accuracy,
                        reasoning/answer consistency, well-formed replies and the share of the most common answer
                        letter on a fixed held-out sample, answered greedily before step 1 (a row of its own,
                        step 0), every --eval-every steps and at the end
    OUT/samples.jsonl   for the first --log-samples prompts of each step (rank 0's): the question, its gold answer
                        and every completion with its reward parts, total and advantage (TRL's log_completions)
    the summary         printed at the end: the first and last 10% of steps, held-out at the start and the end,
                        wall time, the files written and the commands that read them

Held-out questions come from the images the run's own few-shot split left out (data.few_shot with the run's
--n-images and --seed), so none was trained on, and are scored by eval.py's functions: options reshuffled and
parsed as eval.py's answer path does, eval.summarize (macro average) and eval.consistency.
"""
import collections
import dataclasses
import datetime
import json
import math
import os
import sys
import time
from statistics import fmean

import torch.distributed as dist

import data
import eval
import runs
import synth


class Watch:
    def __init__(self, cfg, world, device, train_set, held_out, started):
        """`held_out`: the split's questions the run never trains on; `started`: time.time() when the run began, for
        the wall time in the summary. Picks the held-out sample (the same on every rank); grpo.resolve has checked
        its flags before anything was built."""
        self.cfg, self.world, self.device = cfg, world, device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.train_set, self.started = train_set, started
        self.questions = heldout_questions(held_out, cfg, world) if cfg.eval_every else []
        self.heldout_seconds, self.start, self.answer = 0.0, 1, None  # answer: set by begin(), needs the policy

    def begin(self, start, rollout, policy, processor):
        """Before the first step of this process: the run's first line, drop the samples.jsonl lines a resumed run
        will replay, and measure the held-out sample once before any training: returns [the step-0 row] or [].
        rollout(policy, processor, prompts, cfg): grpo's, here with G = 1 at temperature 0 (greedy). Every rank
        must call this."""
        cfg, greedy = self.cfg, dataclasses.replace(self.cfg, group_size=1, temperature=0.0)
        self.answer = lambda prompts: rollout(policy, processor, prompts, greedy)[1]  # one text per prompt
        self.start = start
        if self.rank == 0:
            images = len({s.image for s in self.train_set})
            print(f"grpo: {len(self.train_set)} questions on {images} images, {self.world} rank(s) on "
                  f"{self.device.type} in {cfg.dtype}, {cfg.prompts_per_step} prompts x G={cfg.group_size} per step, "
                  f"steps {start}..{cfg.steps}, rewards {cfg.rewards} -> {cfg.out}", file=sys.stderr)
        path = os.path.join(self.cfg.out, "samples.jsonl")
        if self.rank == 0 and os.path.isfile(path):
            with open(path) as f:
                kept = [line for line in f if line.endswith("\n") and step_of(line) < start]  # a torn line goes too
            with open(path, "w") as f:
                f.writelines(kept)
        if not (self.questions and start == 1):
            return []
        row = {"step": 0, **self.heldout()}
        if self.rank == 0:
            runs.append_metrics(self.cfg.out, row)
        return [row]

    def step(self, step, row, prompts, texts, parts, total, advantages):
        """After a step's metrics row: samples.jsonl (rank 0), then the held-out keys into `row` when due. Every
        rank must call this (the held-out generate is collective under FSDP)."""
        if self.rank == 0 and self.cfg.log_samples:
            write_samples(self.cfg, step, prompts, texts, parts, total, advantages)
        if self.questions and (step % self.cfg.eval_every == 0 or step == self.cfg.steps):
            row.update(self.heldout())

    def heldout(self):
        """{heldout_*: %} of the fixed sample answered greedily by the policy now. Each rank answers its share in
        batches of as many rows as its rollout decodes (P_r·G), then every rank gets every record."""
        t0 = time.time()
        mine = self.questions[self.rank::self.world]  # the same count on every rank: the same generate calls
        batch = max(1, self.cfg.prompts_per_step // self.world * self.cfg.group_size)
        texts = [t for i in range(0, len(mine), batch) for t in self.answer(mine[i:i + batch])]
        records = [eval.record(s, text) for s, text in zip(mine, texts)]
        everyone = [None] * self.world
        dist.all_gather_object(everyone, records)
        records = [r for rank_records in everyone for r in rank_records]
        average, agree = eval.summarize(records)["Average"], eval.consistency(records)
        letters = collections.Counter(r["predicted"] for r in records if r["predicted"])
        self.heldout_seconds += time.time() - t0
        return {"heldout_accuracy": average.get("Average"),
                "heldout_anomaly_detection": average.get("Anomaly Detection"),
                "heldout_consistency": agree.get("Overall"),
                "heldout_well_formed": 100.0 * agree["well_formed"] / max(1, agree["replies"]),
                # a model that answers one letter to everything scores that letter's share of golds: watch for it
                "heldout_top_letter": 100.0 * max(letters.values(), default=0) / max(1, len(records))}

    def summary(self, rows):
        """Rank 0 prints the run in a few lines (stdout), to read or quote as printed."""
        trained = [r for r in rows if r["step"] >= 1]
        if self.rank == 0 and trained:
            heldout = [r for r in rows if "heldout_accuracy" in r]
            steps = sum(r["seconds"] for r in trained if r["step"] >= self.start)  # this process's steps
            print(summary_lines(self.cfg, trained, heldout, len(self.questions), self.world,
                                {"wall": time.time() - self.started, "steps": steps, "held-out": self.heldout_seconds}),
                  flush=True)


def heldout_questions(held_out, cfg, world):
    """--eval-questions of the held-out questions (fewer if the split holds fewer), spread over datasets, categories
    and subtasks (data.spread_sample, seed 0), a multiple of the ranks, each asked as eval.py asks it."""
    held = [s for s in held_out if s.question_type != data.GROUNDING]  # scored by IoU, not a letter (eval.py's way)
    n = min(cfg.eval_questions, len(held))
    if n < world:  # a small data set of one's own: train anyway, say why nothing held-out is logged
        if dist.get_rank() == 0:
            print(f"grpo.py: note: the held-out split of {synth.questions_file(cfg)[0]} has {len(held)} questions, "
                  f"fewer than the {world} ranks: no held-out accuracy this run (--eval-every is off)", file=sys.stderr)
        return []
    return [eval.asked(s) for s in data.spread_sample(held, n - n % world, seed=0)]


def step_of(line):
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def write_samples(cfg, step, prompts, texts, parts, total, advantages):
    """One samples.jsonl line per logged prompt: what the model said to it and what each answer earned. "gold" is the
    json's answer (a grounding box in the original image's pixels; its reward compares in the model's frame)."""
    G = cfg.group_size
    with open(os.path.join(cfg.out, "samples.jsonl"), "a") as f:
        for i, s in enumerate(prompts[:cfg.log_samples]):
            rows = range(i * G, (i + 1) * G)
            completions = [{"text": texts[j], "rewards": {name: round(float(v[j]), 4) for name, v in parts.items()},
                            "reward": round(float(total[j]), 4), "advantage": round(float(advantages[j]), 4)}
                           for j in rows]
            f.write(json.dumps({"step": step, "image": s.path(), "question_type": s.question_type,
                                "question": s.question, "options": s.options, "gold": s.answer,
                                "completions": completions}, ensure_ascii=False) + "\n")


def summary_lines(cfg, rows, heldout, n_heldout, world, seconds):
    """The summary as text: means over the first and the last 10% of the steps (at least one step each);
    `seconds`: {"wall", "steps", "held-out"} of this process."""
    k = max(1, round(len(rows) / 10))
    first, last = rows[:k], rows[-k:]
    span = lambda rs: f"{rs[0]['step']}-{rs[-1]['step']}" if len(rs) > 1 else f"{rs[0]['step']}"  # noqa: E731
    mean = lambda rs, key: fmean(r[key] for r in rs)  # noqa: E731
    arrow = lambda key, fmt="{:.3f}": f"{fmt.format(mean(first, key))} -> {fmt.format(mean(last, key))}"  # noqa: E731
    parts = [key for key in rows[0] if key.startswith("reward/")]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"grpo summary ({now}): {rows[-1]['step']} steps, rewards {cfg.rewards}, {world} rank(s), "
             f"{os.cpu_count()} CPU core(s), load average {os.getloadavg()[0]:.1f}",
             f"  training, mean of steps {span(first)} -> {span(last)} (first and last 10%), "
             f"{cfg.prompts_per_step} prompts x G={cfg.group_size} sampled at temperature {cfg.temperature}:",
             f"    reward {arrow('reward')} = " + " + ".join(f"{p[7:]} {arrow(p)}" for p in parts),
             f"    accuracy {arrow('accuracy', '{:.2f}')}, "
             f"reasoning/answer consistency {arrow('consistency', '{:.2f}')}"]
    if heldout:
        ends = [heldout[0], heldout[-1]][:len(heldout)]  # one row: a run stopped before its next held-out measure
        pct = lambda key: " -> ".join("-" if r.get(key) is None else f"{r[key]:.1f}%" for r in ends)  # noqa: E731
        lines += [f"  held-out, {n_heldout} questions on images it never "
                  f"trained on, greedy, {cfg.shots}-shot, step {' -> '.join(str(r['step']) for r in ends)}:",
                  f"    macro accuracy {pct('heldout_accuracy')}, Anomaly Detection "
                  f"{pct('heldout_anomaly_detection')}, consistency {pct('heldout_consistency')}",
                  f"    answers that are the most common letter {pct('heldout_top_letter')}"]
    wall, steps, held = seconds["wall"], seconds["steps"], seconds["held-out"]
    done = rows[-1]["step"] == cfg.steps
    lines += [f"  wall time {wall:.0f} s (after imports): steps {steps:.0f} s, held-out {held:.0f} s, start-up and checkpoints "
              f"{wall - steps - held:.0f} s",
              f"  wrote {cfg.out}/metrics.jsonl" + (f", {cfg.out}/samples.jsonl" if cfg.log_samples else "")
              + f", {cfg.out}/final/" * done,
              f"  next: python plot.py {cfg.out}" + f"    python eval.py --model {cfg.out}/final" * done]
    return "\n".join(lines)


def metrics_row(step, total, parts, logged, mask, stats, lr, seconds, rows, cfg, device):
    """One line of metrics.jsonl: means over every completion of the step, all ranks."""
    groups = total.view(-1, cfg.group_size)  # [P_r, G]
    sums = runs.all_reduce({"reward": total.sum(), **{f"reward/{n}": v.sum() for n, v in parts.items()},
                       **{n: v.sum() for n, v in logged.items()}, "completions": len(total),
                       "zero_std": (groups.amax(1) == groups.amin(1)).sum(), "tokens": mask.sum(),
                       "kl": stats["kl"], "clip": stats["clip"], "stat_tokens": stats["stat_tokens"]}, device)
    N = sums["completions"]
    return {"step": step, "reward": sums["reward"] / N,
            **{k: sums[k] / N for k in sums if k.startswith("reward/")},
            "accuracy": sums["accuracy"] / N, "consistency": sums["consistency"] / N,
            "kl": sums["kl"] / max(1, sums["stat_tokens"]),
            "clip_fraction": sums["clip"] / max(1, sums["stat_tokens"]),
            "completion_length": sums["tokens"] / N,
            "zero_std_fraction": sums["zero_std"] / (N // cfg.group_size),
            "loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": lr,
            "skipped": (rows[-1].get("skipped", 0) if rows else 0) + stats["skipped"],  # the step-0 row has none
            "seconds": seconds, "tokens_per_s": sums["tokens"] / seconds,
            # the planner's per-GPU prediction (python grpo.py --plan) is checked against this
            "peak_memory_gib": runs.all_reduce({"m": runs.peak_memory_gib(device)}, device, op="max")["m"]}
