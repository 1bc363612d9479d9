"""The GPU path rehearsed on CPU: FSDP2 with MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32), as
`torchrun grpo.py` runs it on GPUs (grpo.py's default there: --dtype bf16). `python -m pytest -k bf16` runs these."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import anomalyr1  # noqa: E402
import data  # noqa: E402
import grpo  # noqa: E402
import runs  # noqa: E402
import synth  # noqa: E402

SMALL_FLAGS = ["--group-size", "4", "--prompts-per-step", "2", "--max-completion", "40", "--warmup-steps", "0"]


def test_bf16_torchrun_two_ranks_two_steps_and_the_checkpoint_reloads(tiny, synthetic, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "grpo.py",
           "--dtype", "bf16", "--steps", "2", "--out", str(out), "--eval-every", "0", *SMALL_FLAGS]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "2 rank(s) on cpu in bf16" in r.stderr
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [row["step"] for row in rows] == [1, 2] and rows[-1]["skipped"] == 0
    assert all(math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0 for row in rows)
    # the checkpoint holds the fp32 master weights, and it reloads: as a plain model, and as a run to resume
    from transformers import Qwen2_5_VLForConditionalGeneration
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out / "final"))
    assert model.get_input_embeddings().weight.dtype == torch.float32
    assert runs.find_checkpoint(str(out)).endswith("step-000002")
    cfg = grpo.resolve(grpo.parse_config(["--resume", str(out)]))
    assert (cfg.dtype, cfg.group_size, cfg.steps) == ("bf16", 4, 2)


def samples_with_templates(n):
    """n choice questions of the synthetic set, each shown with one similar normal template image."""
    root, path = synth.ensure_synthetic()
    train_set, _ = data.few_shot(data.load_mmad(path, root), n_images=600, seed=0)
    return [s for s in train_set if s.question_type != data.GROUNDING][:n]


def test_bf16_packed_logprobs_agree_with_fp32(tiny, synthetic):
    # The policy as grpo.py builds it (fp32 master weights, FSDP2 on a one-rank group), computing in bf16 and in
    # fp32, on the packed rows [q | o_1 | … | o_G] of two prompts with a template image each and G = 3. bf16 keeps
    # 8 bits of mantissa (relative error 2^-9 per rounding); through the tiny model's 2 layers and 1k vocabulary
    # the error measured max 0.044 and mean 0.0022 nats over 143 completion tokens. Tolerance: max 0.15, mean 0.01
    # nats per token; a wrong mask or position (a completion seeing another one) moves log-probs by whole nats.
    G, samples = 3, samples_with_templates(2)
    runs.setup_distributed()  # a one-rank process group, as `python grpo.py` makes
    models = {d: grpo.build_models(grpo.resolve(grpo.Config(dtype=d, beta=0.0, out="unused")), torch.device("cpu"))
              for d in ("fp32", "bf16")}
    policy, processor = models["fp32"][0], models["fp32"][2]
    batch = anomalyr1.prepare(processor, samples, shots=1)
    assert len(batch["image_grid_thw"]) == 4  # each prompt: a template image + the query image
    torch.manual_seed(0)
    with torch.no_grad():
        policy.eval()
        ids, _ = anomalyr1.generate(policy, processor, batch, max_new_tokens=24, num_return_sequences=G)  # [2G, T]
        prompts = anomalyr1.split_prompts(batch, policy.config.vision_start_token_id)
        logp = {d: torch.cat([anomalyr1.packed_logprobs(m[0].eval(), p, ids[i * G:(i + 1) * G])
                              for i, p in enumerate(prompts)]) for d, m in models.items()}  # [2G, T] each
    mask = anomalyr1.completion_mask(ids, anomalyr1.special_id(processor, anomalyr1.END_OF_TURN)).bool()  # [2G, T]
    assert logp["bf16"].dtype == torch.float32 and mask.sum() > 2 * G
    err = (logp["bf16"] - logp["fp32"]).abs()[mask]
    print(f"bf16 vs fp32 log-prob error: max {err.max():.4f}, mean {err.mean():.5f} nats over {len(err)} tokens")
    assert err.max() < 0.15 and err.mean() < 0.01, (err.max().item(), err.mean().item())
    assert err.max() > 0  # bf16 really ran: not the fp32 forward twice


def test_bf16_reference_and_policy_agree_at_step_1(tiny, synthetic, tmp_path):
    # At step 1 the policy is the reference: the fp32 master weights all-gathered to bf16 equal the reference's own
    # bf16 weights (one rounding of the same numbers), so the log-probs agree and the k3 KL is 0.
    [row] = grpo.train(grpo.Config(dtype="bf16", steps=1, group_size=4, prompts_per_step=2, max_completion=40,
                                   eval_every=0, out=str(tmp_path / "run")))
    assert row["kl"] == pytest.approx(0.0, abs=1e-6)
    assert math.isfinite(row["loss"]) and row["grad_norm"] > 0 and row["skipped"] == 0
