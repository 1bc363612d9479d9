"""bench.py: the shared setting, the summary arithmetic, and one real step of each side (TRL's only where installed)."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args(**kw):
    return argparse.Namespace(**{**dict(group_size=4, prompts=2, max_completion=32, shots=1, steps=3, threads=1), **kw})


def test_ours_config_takes_the_bench_setting(tmp_path):
    cfg = bench.ours_config(args(group_size=3, prompts=5, max_completion=7, shots=0, steps=2), str(tmp_path))
    assert (cfg.group_size, cfg.prompts_per_step, cfg.max_completion, cfg.shots, cfg.steps) == (3, 5, 7, 0, 2)
    assert (cfg.beta, cfg.clip_eps, cfg.norm, cfg.rewards, cfg.temperature) == (0.04, 0.2, "seq", "accuracy,roam", 1.0)
    assert cfg.grad_checkpointing and cfg.save_every == 2  # saved once, after the last timed step


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl not installed (pip install trl==1.16.0)")
def test_trl_config_copies_ours(tmp_path, tiny):
    _, processor = tiny
    cfg = bench.ours_config(args(group_size=3, prompts=5), str(tmp_path / "ours"))
    t = bench.trl_config(cfg, str(tmp_path / "trl"), processor)
    assert t.per_device_train_batch_size == 15 and t.num_generations == 3  # TRL's batch counts completions
    assert (t.max_completion_length, t.beta, t.epsilon, t.temperature, t.learning_rate, t.max_steps) == \
        (cfg.max_completion, cfg.beta, cfg.clip_eps, cfg.temperature, cfg.lr, cfg.steps)
    assert t.loss_type == "grpo" and t.gradient_checkpointing and not t.bf16 and t.use_cpu and not t.shuffle_dataset


def test_summarize_drops_warmup_and_takes_medians():
    step = lambda s, n, gen: {"seconds": s, "cpu": s / 2, "tokens": n, "phases": {"generate": gen}}
    runs = [{"peak_rss_mb": 100.0, "steps": [step(9.0, 1, 5.0), step(1.0, 10, 0.5), step(3.0, 30, 1.0)]},
            {"peak_rss_mb": 300.0, "steps": [step(9.0, 1, 5.0), step(2.0, 20, 0.5), step(2.0, 40, 1.5)]}]
    r = bench.summarize(runs, warmup=1)  # measured: (1, 10), (3, 30), (2, 20), (2, 40)
    assert r["n"] == 4 and r["s_step"] == 2.0 and r["tokens_step"] == 25.0
    assert r["tok_s"] == 25 / 2 and r["cpu_step"] == 1.0 and r["tok_cpu_s"] == 25 / 1 and r["rss"] == 200.0
    assert r["phases"]["generate"] == 0.75 and r["phases"]["other"] == 1.0  # others: 0.5, 2.0, 1.5, 0.5


def test_timed_counts_exclusive_time():
    import time

    class Box:
        def outer(self):
            time.sleep(0.05)
            self.inner()

        def inner(self):
            time.sleep(0.1)
    before = dict(bench.PHASES)
    bench.timed(Box, "outer", "test-outer")
    bench.timed(Box, "inner", "test-inner")
    Box().outer()
    outer = bench.PHASES["test-outer"] - before.get("test-outer", 0)
    inner = bench.PHASES["test-inner"] - before.get("test-inner", 0)
    assert 0.1 <= inner < 0.14 and 0.05 <= outer < 0.09  # the inner call's time is not also the outer's


def run_side(side, tmp_path):
    """One side as the parent runs it: its own process, one step, JSON on the last stdout line."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "--side", side, "--json", "--steps", "1",
                           "--threads", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["side"] == side and result["threads"] == 1 and result["peak_rss_mb"] > 50
    (s,) = result["steps"]
    assert 0 < s["tokens"] <= 4 * 2 * 32 and s["seconds"] > 0 and s["cpu"] > 0
    assert {"generate", "reward", "logp no-grad (ref)", "logp fwd (policy)", "backward", "optimizer"} <= set(s["phases"])
    assert sum(s["phases"].values()) <= s["seconds"] * 1.01  # exclusive phases never add up to more than the step


def test_ours_side_runs_one_step(tmp_path, tiny, synthetic):
    run_side("ours", tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="trl not installed (pip install trl==1.16.0)")
def test_trl_side_runs_one_step(tmp_path, tiny, synthetic):
    run_side("trl", tmp_path)
