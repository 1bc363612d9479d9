"""grpo.py's training loop on the tiny model: it learns, it runs under torchrun with FSDP2 and saves folders plain
transformers loads, it resumes exactly, a NaN step is skipped, SIGTERM saves, and --plan prints the memory table.
(The GRPO math is in test_grpo_math.py.)"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import anomalyr1  # noqa: E402
from tiny import build_tiny  # noqa: E402
import grpo  # noqa: E402
import roam  # noqa: E402
import runs  # noqa: E402

# a few seconds per step on 2 cores: 2 prompts x G = 4, up to 40 new tokens (the tiny model says ~30); no held-out
# measure and no samples.jsonl here (test_watch.py tests them)
SMALL = dict(group_size=4, prompts_per_step=2, max_completion=40, warmup_steps=0, eval_every=0, log_samples=0)
SMALL_FLAGS = ["--group-size", "4", "--prompts-per-step", "2", "--max-completion", "40", "--warmup-steps", "0",
               "--eval-every", "0", "--log-samples", "0"]


def config(tmp_path, name="run", **kw):
    return grpo.Config(out=str(tmp_path / name), **{**SMALL, **kw})


def metrics(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def weights(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def initial_weights():
    return weights(build_tiny())


def mean(xs):
    return sum(xs) / len(xs)


def test_data_order_is_a_function_of_the_step():
    cfg = grpo.Config(prompts_per_step=4, seed=3)
    train_set = list(range(10))  # stand-ins for samples
    steps = [runs.step_prompts(train_set, cfg, s) for s in range(1, 6)]  # 5 steps x 4 = 2 epochs of 10
    assert sorted(sum(steps, [])[:10]) == train_set and sorted(sum(steps, [])[10:]) == train_set  # each epoch: all once
    assert sum(steps, [])[:10] != sum(steps, [])[10:]  # a new permutation per epoch
    assert runs.step_prompts(train_set, cfg, 4) == steps[3]  # no hidden state: recomputed identically
    assert runs.step_prompts(train_set, grpo.Config(prompts_per_step=4, seed=4), 1) != steps[0]


def test_toy_reward_rises(tiny, synthetic, tmp_path, monkeypatch):
    # The tiny model names a random option by its text, in one word ("Pcb", "Yes") or two ("Metal plate"); reward
    # one-word answers and GRPO must make them the habit. Measured on tiny-v5 (10 steps, lr 5e-4), last 3 steps'
    # mean minus the first 3 steps': seed 3 +0.17 (0.67 -> 0.83); seeds 1-4 +0.04 to +0.21, least where one word
    # starts near its ceiling (0.79); with the sign flipped, seed 3's one-word share falls 0.63 -> 0.29.
    def one_word(text, answer, options):
        said = (roam.parse(text).answer or "").strip()
        return 1.0 if said and " " not in said else 0.0   # no answer block, or an empty one, is not a word
    monkeypatch.setitem(roam.REWARDS, "extra", one_word)  # a reward like any of roam.py's, by name
    rows = grpo.train(config(tmp_path, rewards="format,extra", steps=10, lr=5e-4, seed=3, beta=0.04))
    assert [r["step"] for r in rows] == list(range(1, 11))
    first, last = mean([r["reward/extra"] for r in rows[:3]]), mean([r["reward/extra"] for r in rows[-3:]])
    assert last > first + 0.1, (first, last, [r["reward/extra"] for r in rows])
    assert mean([r["reward/format"] for r in rows[-3:]]) > 0.6  # and it kept the format
    assert all(r["skipped"] == 0 and r["kl"] >= 0 for r in rows)
    keys = {"reward", "reward/format", "reward/extra", "accuracy", "consistency", "kl", "clip_fraction",
            "completion_length", "zero_std_fraction", "skipped", "lr", "grad_norm", "seconds", "tokens_per_s",
            "peak_memory_gib"}
    assert keys <= set(rows[0])
    assert 0.1 < rows[-1]["peak_memory_gib"] < 24  # this process's peak RSS: the tiny model, far below the machine


def test_the_tiny_model_has_its_own_beta_and_a_flag_overrides_it():
    # β 0.2 for the tiny model (README: at the paper's 0.04 it stops learning), the paper's 0.04 for a model folder
    # (the tiny model's saved folder is one); a flag wins, 0 included (no reference model)
    assert grpo.resolve(grpo.parse_config([])).beta == 0.2
    assert grpo.resolve(grpo.parse_config(["--model", build_tiny()])).beta == 0.04
    assert grpo.resolve(grpo.parse_config(["--beta", "0.04"])).beta == 0.04
    assert grpo.resolve(grpo.parse_config(["--beta", "0"])).beta == 0.0


def test_torchrun_fsdp2_two_processes(tiny, synthetic, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo.py",
           "--steps", "2", "--out", str(out), *SMALL_FLAGS, "--eval-every", "2", "--eval-questions", "4"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    heldout, *rows = metrics(out)  # the held-out sample split over the 2 ranks (FSDP generate is collective)
    assert heldout["step"] == 0 and 0 <= heldout["heldout_accuracy"] <= 100 and "heldout_accuracy" in rows[-1]
    assert [row["step"] for row in rows] == [1, 2] and rows[-1]["skipped"] == 0
    assert "grpo summary" in r.stdout and r.stdout.count("grpo summary") == 1  # rank 0 only
    assert rows[0]["completion_length"] > 0 and rows[0]["tokens_per_s"] > 0
    # final/ is a plain Hugging Face folder, and training changed the weights
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out / "final"))
    processor = anomalyr1.image_only_processor_class().from_pretrained(str(out / "final"))
    with open(out / "final" / "config.json") as f:
        assert json.load(f)["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    before, saved = initial_weights(), weights(out / "final")
    assert set(saved) == set(before)  # same tensors as the tiny model's own folder (tied lm_head stored once)
    changed = [k for k in before if not torch.equal(before[k], saved[k])]
    assert len(changed) > len(before) // 2, f"only {len(changed)} of {len(before)} tensors changed"
    assert torch.equal(model.get_input_embeddings().weight, saved["model.embed_tokens.weight"])  # loads what was saved
    assert os.path.isdir(out / "step-000002") and not any(n.startswith(".tmp") for n in os.listdir(out))
    assert processor.tokenizer.convert_tokens_to_ids(anomalyr1.END_OF_TURN) == model.config.text_config.eos_token_id


@pytest.mark.parametrize("flag", [["--group-size", "0"], ["--no-such-flag"], ["--model", "/nonexistent/model"]],
                         ids=["bad-value", "unknown", "no-model-folder"])
def test_torchrun_prints_a_mistake_once(tmp_path, flag):
    """Every rank meets the same mistake: one error line, from the first rank, not one per rank."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo.py",
           "--out", str(tmp_path / "run"), *flag]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and r.stderr.count("grpo.py: error:") == 1, r.stderr[-3000:]
    assert flag[0] in r.stderr and not (tmp_path / "run").exists()


def test_resume_replays_exactly(tiny, synthetic, tmp_path):
    # step 3's metrics need the weights, the data position and the sampling restored; the final weights need
    # AdamW's state too
    full = grpo.train(config(tmp_path, "full", steps=3, save_every=2))
    grpo.train(config(tmp_path, "cut", steps=2, save_every=2))
    cut = str(tmp_path / "cut")
    resumed = grpo.train(config(tmp_path, "cut", steps=3, save_every=2, resume=cut))
    assert [r["step"] for r in resumed] == [1, 2, 3] and [r["step"] for r in metrics(cut)] == [1, 2, 3]
    for a, b in zip(full[2:], resumed[2:]):
        for key in ("reward", "accuracy", "kl", "completion_length", "zero_std_fraction"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])
        for key in ("loss", "grad_norm", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)
    assert sorted(os.listdir(cut)) == ["final", "metrics.jsonl", "step-000002", "step-000003"]
    w_full, w_cut = weights(tmp_path / "full" / "final"), weights(tmp_path / "cut" / "final")
    assert all(torch.equal(w_full[k], w_cut[k]) for k in w_full)


def test_nan_step_is_skipped_and_counted(tiny, synthetic, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = grpo.grpo_loss

    def nan_on_first_step(*args, **kwargs):  # step 1 runs 2 micro-batches (one per prompt)
        calls["n"] += 1
        loss, stats = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] <= 2 else loss), stats

    monkeypatch.setattr(grpo, "grpo_loss", nan_on_first_step)
    rows = grpo.train(config(tmp_path, steps=2, save_every=1, beta=0.0))
    assert [r["skipped"] for r in rows] == [1, 1]  # cumulative
    assert rows[1]["grad_norm"] == rows[1]["grad_norm"] and rows[1]["loss"] == rows[1]["loss"]  # not NaN
    run = tmp_path / "run"
    start, step1, step2 = initial_weights(), weights(run / "step-000001"), weights(run / "step-000002")
    assert all(torch.equal(start[k], step1[k]) for k in start), "the NaN step must not touch the weights"
    assert any(not torch.equal(step1[k], step2[k]) for k in start), "training goes on after it"


def test_policy_old_and_ref_logprobs_are_taken_at_the_rollout_temperature(tiny, synthetic, tmp_path, monkeypatch):
    seen = []
    real = anomalyr1.packed_logprobs

    def spy(model, prompt, completions, temperature=1.0):
        seen.append((torch.is_grad_enabled(), temperature))
        return real(model, prompt, completions, temperature)

    monkeypatch.setattr(anomalyr1, "packed_logprobs", spy)
    grpo.train(config(tmp_path, steps=1, inner_steps=2, beta=0.04, temperature=0.5, max_completion=8))
    # per prompt: π_ref and π_θold without grad, then π_θ with grad on each of the μ = 2 inner steps
    assert sorted(seen) == [(False, 0.5)] * 4 + [(True, 0.5)] * 4


def test_micro_batches_and_inner_steps_give_the_same_update(tiny, synthetic, tmp_path):
    # One step, μ = 2 optimizer steps on the same rollout (so π_θold and the clip are live), token-level norm:
    # log-probs taken 1 completion at a time must give the same update as whole groups of 4.
    kw = dict(steps=1, inner_steps=2, norm="token", beta=0.0, lr=1e-3)
    [a] = grpo.train(config(tmp_path, "whole", **kw))
    [b] = grpo.train(config(tmp_path, "split", logprob_batch=1, **kw))
    assert a["zero_std_fraction"] < 1 and a["reward"] == b["reward"]  # the same rollout, and something to learn
    for key in ("loss", "grad_norm"):  # AdamW is scale-invariant; the gradient norm is not
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
    whole, split = weights(tmp_path / "whole" / "final"), weights(tmp_path / "split" / "final")
    start = initial_weights()
    diff = torch.cat([(whole[k] - split[k]).abs().flatten() for k in whole])
    # float noise only: summation order differs, and AdamW turns the noise of ~0 gradients (e.g. the key bias,
    # which softmax ignores) into small steps; a wrong micro-batch weighting moves most weights by ~lr
    assert (diff > 1e-6).float().mean() < 1e-3
    assert sum(not torch.equal(whole[k], start[k]) for k in whole) > len(whole) // 2
    from safetensors.torch import load_file
    optimizer = load_file(str(tmp_path / "split" / "step-000001" / "optimizer.safetensors"))
    assert {v.item() for k, v in optimizer.items() if k.endswith(".step")} == {2.0}  # μ = 2 AdamW steps


def read(path):
    with open(path) as f:
        return f.read()


def test_sigterm_saves_and_resumes(tiny, synthetic, tmp_path):
    out = str(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "grpo.py", "--steps", "50", "--save-every", "50", "--out", out,
                             *SMALL_FLAGS], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 600
    while (not os.path.isfile(path) or not read(path).strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]  # saved, and stopped: not a finished run
    k = len(metrics(out))
    assert 1 <= k < 50 and f"stopped at step {k}; resume with --resume {out}" in err
    assert os.path.isfile(os.path.join(out, f"step-{k:06d}", "trainer_state.json"))
    # the CLI resumes with the saved settings; flags given now (--steps) override them
    cfg = grpo.resolve(grpo.parse_config(["--resume", out, "--steps", str(k + 1)]))
    assert (cfg.group_size, cfg.max_completion, cfg.out, cfg.steps) == (4, 40, out, k + 1)
    rows = grpo.train(cfg)
    assert [r["step"] for r in rows] == list(range(1, k + 2)) and len(metrics(out)) == k + 1


def test_plan_prints_the_table_and_exits(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert grpo.main(["--plan", "--gpus", "4", "--group-size", "8"]) == 0
    table = capsys.readouterr().out
    assert "qwen2.5-vl-3b" in table and "GiB per GPU" in table and "G=8" in table and "256 completion" in table
    # one GPU: `python grpo.py` there is a one-rank FSDP2 group, planned with shards the size of the whole model
    assert grpo.main(["--plan", "--gpus", "1", "--prompts-per-step", "2"]) == 0
    one = capsys.readouterr().out
    assert "1 GPU(s) FSDP2, bf16 compute" in one and "3.755 B params" in one
    assert os.listdir(tmp_path) == []  # no training, nothing written


@pytest.mark.parametrize("argv, words", [
    (["--rewards", "accuracy,bogus"], "unknown reward 'bogus'"),
    (["--rewards", ""], "argument --rewards: empty"),            # it used to train on nothing and crash at step 1
    (["--rewards", " , "], "an empty name between commas"),
    (["--rewards", "accuracy,,roam"], "an empty name between commas"),  # was stored as such
    (["--rewards", "accuracy,roam,accuracy"], "'accuracy' named twice"),
    (["--data", "/nonexistent/mmad.json"], "/nonexistent/mmad.json"),
    (["--resume", "/nonexistent/run"], "no checkpoint"),
    (["--group-size", "1"], "--group-size"),
])
def test_user_errors_exit_2_with_one_line(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        grpo.main(argv + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("grpo.py: error: ") and words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("env, preset, expected", [
    ({}, None, 1),                        # torch's default (a thread per core) -> one thread per process
    ({"OMP_NUM_THREADS": "2"}, None, 2),  # the user's OMP_NUM_THREADS is kept
    ({}, "other", "other"),               # so is a torch.set_num_threads made before
])
def test_threads_one_per_process_unless_the_user_chose(env, preset, expected, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    other = runs._STARTUP_THREADS + 1  # anything but torch's default
    try:
        torch.set_num_threads(other if preset else int(env.get("OMP_NUM_THREADS", 0)) or runs._STARTUP_THREADS)
        runs.set_threads()
        assert torch.get_num_threads() == (other if expected == "other" else expected)
    finally:
        torch.set_num_threads(before)
