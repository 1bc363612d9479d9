"""
GRPO training of Qwen2.5-VL with the ROAM reward (AnomalyR1 §3.2-3.3).

GRPO (Group Relative Policy Optimization, DeepSeekMath) is PPO without a value network: for each
prompt q we sample a group of G completions o_1..o_G from the current ("old") policy, score each
with a reward (roam.py), and use the reward's z-score inside its own group as the advantage of
every token of that completion. The objective, maximised:

    Â_i     = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)
    ρ_i,t   = π_θ(o_i,t | q, o_i,<t) / π_θold(o_i,t | q, o_i,<t)                 eq. (1)
    M_i,t   = min(ρ_i,t · Â_i,  clip(ρ_i,t, 1-ε, 1+ε) · Â_i)                       eq. (4)
    D_i,t   = π_ref/π_θ - log(π_ref/π_θ) - 1    (k3 estimate of KL[π_θ || π_ref])  eq. (5)-(6)
    J(θ)    = 1/G Σ_i 1/|o_i| Σ_t (M_i,t - β · D_i,t)                             eq. (3)

The loss is -J. Each equation is implemented once, in the functions below.

Run:
    python grpo.py                               # one process (--model tiny: offline, CPU)
    torchrun --nproc_per_node=2 grpo.py          # one process per GPU (FSDP2)
"""
import torch

# ----------------------------------------------------------------------------- GRPO math


def group_advantages(rewards, group_size, eps=1e-4):
    """Â_i: each completion's reward standardised within its group of `group_size` consecutive rows.
    No value network: the other G-1 answers to the same prompt are the baseline."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}: the advantage is a z-score within "
                         "a group, and one completion has no std (use --group-size 2 or more)")
    rewards = torch.as_tensor(rewards, dtype=torch.float32).flatten()  # [N]
    if rewards.numel() % group_size != 0:
        raise ValueError(f"got {rewards.numel()} rewards, not a multiple of group_size={group_size}: "
                         "rewards must come as G consecutive completions per prompt")
    r = rewards.view(-1, group_size)  # [N // G, G]
    mean = r.mean(dim=1, keepdim=True)  # [N // G, 1]
    std = r.std(dim=1, keepdim=True)  # [N // G, 1] Bessel-corrected, torch's default
    adv = (r - mean) / (std + eps)  # [N // G, G]
    # A group where all G completions scored the same teaches nothing. Its float mean can miss the
    # common value by an ulp, which / eps would turn into ~1e-4 noise, so make it exactly 0.
    same = r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True)  # [N // G, 1]
    return torch.where(same, torch.zeros_like(adv), adv).flatten()  # [N]


def kl_k3(logp, ref_logp):
    """Per-token k3 estimate of KL[π_θ || π_ref]: unbiased, never negative, exactly 0 where the two agree."""
    # clamp: exp() of a large gap (e.g. a pad token the policy finds very unlikely) must not be inf
    d = (ref_logp - logp).clamp(-20.0, 20.0)  # [N, T] log(π_ref / π_θ)
    return torch.exp(d) - d - 1  # [N, T] eq. (5)-(6)


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.04, norm="seq", normaliser=None):
    """-J_GRPO over N completions, and a few detached stats to log. The whole of eq. (3):

        J(θ) = 1/G Σ_i 1/|o_i| Σ_t ( min(ρ_i,t Â_i, clip(ρ_i,t, 1-ε, 1+ε) Â_i) - β D_i,t )  norm="seq" (paper)
        J(θ) = 1/Σ_i |o_i| Σ_i Σ_t ( the same summand )                                      norm="token" (DAPO)

    normaliser: the denominator of the whole step, G = every completion of the step ("seq") or Σ_i |o_i| = every
    completion token of the step ("token"), counted over all ranks. A step cut into micro-batches (and ranks) then
    has the sum of their losses as its loss, with no re-weighting; None: these N completions are the whole step.
    logp [N, T]: log π_θ of the sampled completion tokens, carries grad.
    old_logp [N, T] or None: log π_θold at sampling time; None = on-policy (one step per rollout), so ρ = 1.
    ref_logp [N, T] or None (only with beta == 0): log π_ref, the frozen starting model.
    advantages [N]; mask [N, T]: 1 on completion tokens up to and including the first end-of-turn."""
    if norm not in ("seq", "token"):
        raise ValueError(f"norm must be 'seq' (paper, eq. 3) or 'token' (DAPO/TRL), got {norm!r}")
    if beta != 0 and ref_logp is None:
        raise ValueError(f"beta={beta} needs ref_logp (the reference model's log-probs); "
                         "pass beta=0 to drop the KL term")
    # Padding after the end of turn may hold anything, -inf too (-inf - -inf = NaN, NaN · 0 = NaN): zeroed first, it
    # never reaches the arithmetic (ρ = 1, k3 = 0 there) and masked_fill passes it an exact 0 gradient.
    pad = mask == 0  # [N, T], as logp, old_logp and ref_logp stay
    logp, old_logp, ref_logp = (x if x is None else x.masked_fill(pad, 0) for x in (logp, old_logp, ref_logp))
    mask = mask.to(logp.dtype)  # [N, T]
    if old_logp is None:
        old_logp = logp.detach()  # ρ is exactly 1, but its gradient is still ∇ log π_θ
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [N, T] clamp: a huge real gap must not make exp() inf
    ratio = torch.exp(log_ratio)  # [N, T] ρ_i,t, eq. (1)
    A = advantages.to(logp.dtype)[:, None]  # [N, 1] one advantage per completion, shared by its tokens
    M = torch.min(ratio * A, ratio.clamp(1 - clip_eps, 1 + clip_eps) * A)  # [N, T] eq. (4)
    kl = kl_k3(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)  # [N, T]
    per_token = (M - beta * kl) * mask  # [N, T] the summand of eq. (3); padding contributes 0
    if norm == "seq":
        # eq. (3): each completion's mean over its own tokens, so every answer weighs the same however long it is.
        # clamp: an empty completion gives 0, not 0/0 = NaN.
        summed = (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum()  # Σ_i 1/|o_i| Σ_t
        normaliser = len(logp) if normaliser is None else normaliser  # G
    else:
        summed = per_token.sum()  # Σ_i Σ_t
        normaliser = mask.sum().clamp(min=1) if normaliser is None else max(normaliser, 1)  # Σ_i |o_i|
    loss = -summed / normaliser

    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        # the clip is active where min() picked the flat clipped term: those tokens get no policy gradient
        clipped = ((ratio < 1 - clip_eps) & (A < 0)) | ((ratio > 1 + clip_eps) & (A > 0))  # [N, T]
        stats = {"kl": ((kl * mask).sum() / n).item(), "ratio_mean": ((ratio * mask).sum() / n).item(),
                 "clip_fraction": ((clipped.to(mask.dtype) * mask).sum() / n).item()}
    return loss, stats

# ----------------------------------------------------------------------------- training
# One training step, end to end:
#   rollout  each rank samples G completions for each of its prompts in one generate call (eval mode); each
#            prompt is prefilled once and its KV cache copied G times
#   score    roam.py rewards per completion, summed; Â = z-score within each group. A rank owns whole groups,
#            so advantages need no communication.
#   update   log π_θ of the sampled tokens and log π_ref from the frozen reference, each one forward per group
#            over one packed row [q | o_1 | … | o_G] (anomalyr1.packed_logprobs; the policy's is gradient-
#            checkpointed), grpo_loss, AdamW.
# One path for 1..N processes: policy and reference are sharded by FSDP2 over all ranks, a one-rank process group
# when there is one process, under one precision policy (--dtype). Each rank's loss is its share of the step's J
# (grpo_loss's normaliser counts all ranks), so FSDP sums the ranks' gradients rather than averaging them.
# Randomness is re-seeded from (seed, step, rank) at the start of every step and the data position is the step
# number, so `--resume` replays exactly what the uninterrupted run would have done.
import collections
import dataclasses
import json
import math
import os
import signal
import sys
import time
import warnings

import torch.distributed as dist

import anomalyr1
import cli
import data
import roam
import runs
import synth
import tiny
import watch
from cli import option


@dataclasses.dataclass
class Config:
    """Every field is a command-line flag (--group-size 8; booleans --flag/--no-flag). None: depends on the model,
    TINY below for the embedded model, REAL (the paper's run) for a --model folder."""
    # model and data
    model: str = option("tiny", "'tiny' (embedded, offline, CPU-sized) or a local Qwen2.5-VL folder")
    data: str | None = option(None, "MMAD-schema questions json, e.g. MMAD's mmad.json (default: the synthetic "
                                    "set, built on first use)")
    root: str | None = option(None, "folder the json's image paths are relative to (default: the json's folder)")
    n_images: int = option(600, "few-shot training set, in images (§3.5)")
    shots: int | None = option(None, "normal template images shown before the query image (MMAD's k-shot)")
    templates: str = option("similar", "which template images: 'similar' (MMAD's ranking) or 'random'")
    # GRPO
    rewards: str = option("accuracy,roam", "comma-separated rewards, summed: accuracy, roam, format, iou, rare "
                                           "(LR-IAD); 'accuracy,format' is classical GRPO (Table 5)")
    group_size: int = option(8, "G, completions sampled per prompt")
    prompts_per_step: int | None = option(None, "prompts per step, all ranks together (a multiple of the ranks)")
    steps: int | None = option(None, "training steps, one rollout each")
    max_completion: int | None = option(None, "max new tokens per completion")
    temperature: float = option(1.0, "sampling temperature of the rollout (> 0: a group needs G different samples)")
    beta: float | None = option(None, "β, weight of the KL to the reference model (0: no reference model is built)")
    clip_eps: float = option(0.2, "ε, the clip range of eq. (4)")
    norm: str = option("seq", "'seq': mean over each completion's tokens, then over completions (eq. 3); "
                              "'token': mean over all tokens (DAPO/TRL)")
    inner_steps: int = option(1, "μ, optimizer steps per rollout (1: on-policy, ρ = 1 exactly)")
    # optimisation
    lr: float | None = option(None, "AdamW learning rate after the warm-up")
    warmup_steps: int | None = option(None, "steps of linear learning-rate warm-up")
    max_grad_norm: float | None = option(None, "gradient-norm clip")
    logprob_batch: int | None = option(None, "completions per log-prob forward/backward, at most G (default: G)")
    grad_checkpointing: bool = option(True, "recompute activations in backward: less memory, slower")
    dtype: str | None = option(None, "compute precision, 'bf16' or 'fp32' (default: bf16 on CUDA, fp32 on CPU); "
                                     "master weights, gradients and AdamW stay fp32", choices=["bf16", "fp32"])
    rollout_reshard: bool = option(False, "reshard the layers after every decode step (less memory during "
                                          "generate, one all-gather per layer per token)")
    # run
    out: str | None = option(None, "run folder: metrics.jsonl, step-NNNNNN/, final/ (default: the --resume "
                                   "folder, else runs/grpo)")
    resume: str | None = option(None, "continue the run in this folder from its newest checkpoint")
    save_every: int | None = option(None, "checkpoint every K steps (and at the end)")
    keep: int = option(2, "step-NNNNNN/ checkpoints kept; older ones are deleted")
    seed: int = option(0, "seed of the few-shot split, the data order and the sampling")
    eval_every: int | None = option(None, "held-out accuracy, consistency at step 0, every K steps, the end (0: off)")
    eval_questions: int = option(40, "--eval-every: held-out questions, a fixed sample, answered greedily")
    log_samples: int = option(2, "prompts per step written to samples.jsonl with every completion (0: off)")
    # --plan
    plan: bool = option(False, "print the per-GPU memory plan of these settings and exit (needs no weights)")
    gpus: int = option(4, "--plan: number of GPUs")
    gpu_gb: float = option(48.0, "--plan: memory per GPU, GiB")


# TINY: `torchrun --nproc_per_node=2 grpo.py` on 2 CPU cores in about 5 minutes (8 with a cold cache). The tiny model
# starts naming options at random; learning from a reward which product or defect kind a picture shows takes it a
# few hundred steps at a high lr and β 0.2: at 0.04 it settles within ~100 steps on one name per question type, all
# G completions alike, and stops learning (README). At that lr a clip at norm 1 let two updates of norm 0.5 break
# its reply format at step 1153 of 1250; 0.3 is the 90th percentile of its norms. Its replies are ~20 tokens. REAL
# is the paper's run (§4.1 and the authors' code): G = 8, 8 prompts per step, 256 new tokens, β 0.04, lr 5e-7 (the
# authors' config; the paper gives none), constant after the warm-up (theirs decays linearly), clip at norm 1.
TINY = dict(prompts_per_step=8, steps=250, max_completion=48, lr=1e-3, warmup_steps=2, shots=0, save_every=50,
            eval_every=50, beta=0.2, max_grad_norm=0.3)
REAL = dict(prompts_per_step=8, steps=1000, max_completion=256, lr=5e-7, warmup_steps=10, shots=1, save_every=100,
            eval_every=0, beta=0.04, max_grad_norm=1.0)
PLAN_ONLY = ("plan", "gpus", "gpu_gb")  # not settings of the run: left out of its trainer_state.json


def resolve(cfg):
    """Fill the model-dependent defaults (None fields) and reject what a user can get wrong."""
    defaults = TINY if cfg.model == "tiny" else REAL
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})
    cfg.out = cfg.out or cfg.resume or os.path.join("runs", "grpo")
    cfg.dtype = cfg.dtype or ("bf16" if torch.cuda.is_available() else "fp32")
    flag = lambda name: f"--{name.replace('_', '-')} {getattr(cfg, name)}"  # noqa: E731 as the user typed it
    at_least = {2: ["group_size"], 1: ["prompts_per_step", "steps", "max_completion", "inner_steps", "keep",  # G:
                "save_every", "n_images", "logprob_batch", "eval_questions"],  # Â is a z-score
                0: ["shots", "warmup_steps", "seed", "eval_every", "log_samples"]}  # 0: off
    try:
        roam.reward_names(cfg.rewards)
    except ValueError as e:
        raise ValueError(f"--rewards {cfg.rewards!r}: {e}") from None
    checks = [
        (cfg.norm in ("seq", "token"), f"--norm must be 'seq' or 'token', got {cfg.norm!r}"),
        (cfg.templates in ("similar", "random"), f"--templates must be 'similar' or 'random', got {cfg.templates!r}"),
        (cfg.dtype in ("bf16", "fp32"), f"--dtype must be 'bf16' or 'fp32', got {cfg.dtype!r}"),
        *[(getattr(cfg, name) is None or getattr(cfg, name) >= low, f"{flag(name)}: must be >= {low}")
          for low, names in at_least.items() for name in names],
        (cfg.logprob_batch is None or cfg.logprob_batch <= cfg.group_size,
         f"{flag('logprob_batch')}: at most --group-size {cfg.group_size} (a forward packs one prompt's completions)"),
        (0 < cfg.lr < math.inf, f"{flag('lr')}: must be a number > 0, e.g. 5e-7"),  # nan and inf fail too
        (0 <= cfg.beta < math.inf, f"{flag('beta')}: must be >= 0 (0: no KL term)"),
        (0 < cfg.clip_eps < 1, f"{flag('clip_eps')}: must be in (0, 1), e.g. 0.2: ρ is clipped to [1-ε, 1+ε]"),
        (cfg.max_grad_norm > 0, f"{flag('max_grad_norm')}: must be > 0 (inf: no clipping)"),
        (0 < cfg.temperature < math.inf, f"{flag('temperature')}: must be > 0, e.g. 1.0 (a group needs G samples)"),
        (cfg.data is None or os.path.isfile(cfg.data), f"--data {cfg.data}: " + ("a folder; pass its questions json "
         "(python data.py build makes one from an MVTec-layout folder)" if os.path.isdir(cfg.data or "") else
         "no such file (an MMAD-schema json)")),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if cfg.model != "tiny" and not cfg.plan:  # headers only: named before the run folder is made (--plan: no weights)
        anomalyr1.check_model_folder(cfg.model)
    return cfg


# ----------------------------------------------------------------------------- distributed and models

def build_models(cfg, device, weights=None):
    """(policy, ref, processor), both models sharded by FSDP2 over all ranks. Policy: fp32 master weights computing
    in --dtype, gradients reduced in fp32, gradient checkpointing. Ref: the frozen starting model, stored in --dtype;
    None when β = 0. `weights`: a checkpoint folder to start the policy from (--resume); the reference is always
    cfg.model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    compute = torch.bfloat16 if cfg.dtype == "bf16" else torch.float32
    policy, processor = anomalyr1.load(weights or cfg.model, device=device, dtype=torch.float32)
    if cfg.grad_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})
    ref = None
    if cfg.beta != 0:
        ref, _ = anomalyr1.load(cfg.model, device=device, dtype=compute)
        ref.eval().requires_grad_(False)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # cast_forward_inputs: bf16 casts the floating inputs (pixel_values) to bf16; fp32 has nothing to cast, and FSDP
    # then skips walking every forward's arguments (measured under cProfile: ~3% of a CPU step, tiny model)
    mp = MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32,
                              cast_forward_inputs=compute != torch.float32)
    # FSDP2 warns when the root returns a view (the logits slice, the per-image features): nothing here writes
    # into them in place, and the gradients equal the unsharded model's (checked on 2 CPU ranks)
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for model in [m for m in (policy, ref) if m is not None]:
        for block in model.model.visual.blocks:             # each vision block,
            fully_shard(block, mesh=mesh, mp_policy=mp)
        for layer in model.model.language_model.layers:     # each decoder layer,
            fully_shard(layer, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)         # then the root: embeddings, patch merger, norm
    for unit in fsdp_modules(policy):  # sum the ranks' gradients, don't average them: each rank's loss is its share
        unit.set_gradient_divide_factor(1.0)          # of J (grpo_loss's normaliser counts all ranks)
        unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no PREMUL_SUM
    # generate() is called outside forward(): registering it runs FSDP's all-gather hooks around it (without, HF
    # generate with images fails with "mixed torch.Tensor and DTensor")
    register_fsdp_forward_method(policy, "generate")
    return policy, ref, processor


def adamw(policy, cfg):
    # foreach: on FSDP2's DTensor parameters torch's CPU default (one op per parameter) took 4x longer, same bits
    return torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0, foreach=True)


def fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


# ----------------------------------------------------------------------------- data order

def load_data(cfg):
    """(training questions, held-out questions): the json's few-shot split (§3.5: 600 images), every image checked
    once. Grounding questions train only with the IoU reward."""
    path, root = synth.questions_file(cfg)
    train_set, held_out = data.few_shot(data.load_mmad(path, root), n_images=cfg.n_images, seed=cfg.seed)
    grounding = "iou" in roam.reward_names(cfg.rewards)
    train_set = [s for s in train_set if grounding or s.question_type != data.GROUNDING]
    data.check_shots(train_set + held_out, cfg.shots, cfg.templates, path)
    if not train_set:
        raise ValueError(f"{path}: no training questions (Defect Grounding ones need --rewards with iou)")
    return train_set, held_out


def set_lr(optimizer, cfg, step):
    lr = cfg.lr * min(1.0, step / max(1, cfg.warmup_steps))  # linear warm-up, then constant
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


# ----------------------------------------------------------------------------- rollout, rewards, update

@torch.no_grad()
def rollout(policy, processor, prompts, cfg):
    """G completions per prompt, one generate call: ids [P_r·G, T], texts, mask [P_r·G, T] (1 up to and including
    the first end-of-turn), and the prompts as P_r one-prompt batches for the update. Each prompt is
    processed and prefilled once, images included (anomalyr1.generate)."""
    # eval(): in transformers 5.23 gradient-checkpointed layers in train mode drop the KV cache, so generate
    # would recompute the whole sequence for every new token
    policy.eval()
    batch = anomalyr1.prepare(processor, prompts, shots=cfg.shots, templates=cfg.templates)
    # keep every layer gathered through all decode steps: one all-gather per layer, not one per layer per token
    # (measured: 129 -> 5 all-gathers for 32 new tokens on 4 layers)
    policy.set_reshard_after_forward(cfg.rollout_reshard)
    try:
        ids, texts = anomalyr1.generate(policy, processor, batch, cfg.max_completion, cfg.temperature, cfg.group_size,
                                        decoding=runs.fsdp_hooks_paused)  # no per-token hooks: all gathered
    finally:
        for m in fsdp_modules(policy):
            m.reshard()
        policy.set_reshard_after_forward(True)                 # the defaults: reshard every layer after
        policy.set_reshard_after_forward(False, recurse=False)  # forward, keep the root (used first in backward)
        policy.train()
    ids = ids.cpu()                                                                  # [P_r·G, T]
    mask = anomalyr1.completion_mask(ids, anomalyr1.special_id(processor, anomalyr1.END_OF_TURN))  # [P_r·G, T]
    return ids, texts, mask, anomalyr1.split_prompts(batch, policy.config.vision_start_token_id)


def gold_answer(sample, processor):
    """The gold answer as the model has to write it: a grounding box moves from original pixels to the frame of
    the query image as the model sees it (load_image's downscale to fit 1000×800, then the processor's resize)."""
    if sample.question_type != data.GROUNDING:
        return sample.answer
    original = data.image_size(sample.path())
    shown = anomalyr1.model_input_size(processor, anomalyr1.fitted_size(original))  # no decode: the header's size
    return json.dumps({"bbox_2d": anomalyr1.box_to_input_frame(json.loads(sample.answer)["bbox_2d"], original, shown)})


def golds_in_model_frame(samples, model):
    """Samples with gold_answer's answers, for eval.py's grounding questions: loads the processor, not the model."""
    processor = anomalyr1.image_only_processor_class().from_pretrained(tiny.build_tiny() if model == "tiny" else model)
    return [dataclasses.replace(s, answer=gold_answer(s, processor)) for s in samples]


def score(prompts, texts, processor, cfg, class_counts):
    """Rewards of the P_r·G completions: the total [N] (the sum of --rewards), each part {name: [N]}, and two
    things logged whatever is trained on: accuracy and reasoning/answer consistency."""
    G = cfg.group_size
    parts, logged = collections.defaultdict(list), collections.defaultdict(list)
    for i, sample in enumerate(prompts):
        group = texts[i * G:(i + 1) * G]
        answer = gold_answer(sample, processor)
        # one parse per completion gives every reward part and the logged accuracy and consistency (§3.3)
        scores, logs = roam.judge_group(cfg.rewards, group, answer, sample.options, label=sample.label,
                                        class_counts=class_counts)
        for name, values in scores.items():
            parts[name] += values
        for name, values in logs.items():
            logged[name] += values
    parts = {name: torch.tensor(v) for name, v in parts.items()}                 # {name: [N]}
    return sum(parts.values()), parts, {k: torch.tensor(v) for k, v in logged.items()}  # [N], {name: [N]}, {[N]}


def micro_batches(batches, mask, cfg):
    """(prompt batch, rows of ids, T) per micro-batch: at most --logprob-batch completions of one prompt, so memory
    is bounded by one group whatever the step size; completions trimmed to the longest in the micro-batch."""
    G, lb = cfg.group_size, cfg.logprob_batch or cfg.group_size
    return [(batch, rows, int(mask[rows].sum(1).max()))
            for i, batch in enumerate(batches)
            for rows in (slice(s, min(s + lb, (i + 1) * G)) for s in range(i * G, (i + 1) * G, lb))]


def train_step(policy, ref, optimizer, batches, ids, mask, advantages, cfg, device):
    """μ = --inner-steps optimizer steps on one rollout: log-probs, eq. (3), AdamW. Returns stats sums."""
    chunks = micro_batches(batches, mask, cfg)

    def logprobs(model, batch, rows, T):  # [n, T] π_θ, π_θold, π_ref: all at the sampled T, as TRL (its ref too)
        return anomalyr1.packed_logprobs(model, batch, ids[rows, :T], cfg.temperature)

    with torch.no_grad():
        ref_logp = [logprobs(ref, *c) if ref is not None else None for c in chunks]
        # π_θold: needed only when the same rollout is reused (μ > 1); with μ = 1, ρ = 1 exactly (grpo_loss)
        old_logp = [logprobs(policy, *c) if cfg.inner_steps > 1 else None for c in chunks]
    # eq. (3)'s denominator for the whole step, all ranks: its P·G completions ("seq") or Σ|o_i| tokens ("token")
    normaliser = (cfg.prompts_per_step * cfg.group_size if cfg.norm == "seq"
                  else runs.all_reduce({"n": mask.sum()}, device)["n"])
    stats = collections.Counter()
    for _ in range(cfg.inner_steps):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for (batch, rows, T), ref_l, old_l in zip(chunks, ref_logp, old_logp):
            m = mask[rows, :T].to(device)  # [n, T]
            loss, s = grpo_loss(logprobs(policy, batch, rows, T), old_l, ref_l, advantages[rows].to(device), m,
                                clip_eps=cfg.clip_eps, beta=cfg.beta, norm=cfg.norm, normaliser=normaliser)
            loss.backward()  # the micro-batches' and ranks' losses add up to the step's: their gradients too
            loss_sum += loss.item()
            n = m.sum().item()
            stats.update(kl=s["kl"] * n, clip=s["clip_fraction"] * n, stat_tokens=n)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm).full_tensor().item()
        loss_all = runs.all_reduce({"loss": loss_sum}, device)["loss"]
        if math.isfinite(loss_all) and math.isfinite(grad_norm):  # the same on every rank: they agree to skip
            optimizer.step()
        else:
            optimizer.zero_grad(set_to_none=True)  # a NaN/inf step is dropped, counted, and training goes on
            stats["skipped"] += 1
        stats["loss"] += loss_all / cfg.inner_steps
        stats["grad_norm"] = grad_norm
    return stats


# ----------------------------------------------------------------------------- the loop

def train(cfg):
    """GRPO with `cfg`; returns the rows of metrics.jsonl (one dict per step, with --eval-every a step-0 row of the
    held-out measure before training), the same on every rank. Raises runs.Stopped, after saving, when SIGINT or
    SIGTERM stopped it early."""
    from tqdm import tqdm
    started = time.time()
    with cli.user_errors("grpo.py"):
        cfg = resolve(cfg)
        rank, world, device = runs.setup_distributed()
        checkpoint, train_set, held_out = prepare_run(cfg, world, device)
        watcher = watch.Watch(cfg, world, device, train_set, held_out, started)  # held-out accuracy, samples, summary
        policy, ref, processor = build_models(cfg, device, weights=checkpoint)
    optimizer = adamw(policy, cfg)
    start, rows = runs.restore(policy, optimizer, checkpoint, cfg.out)
    # LR-IAD's class weights: label counts of the prompts seen so far (replayed on resume)
    class_counts = collections.Counter(s.label for step in range(1, start)
                                       for s in runs.step_prompts(train_set, cfg, step))
    if start > cfg.steps:  # nothing to train; final/ written if a kill during the last save kept it from appearing
        if rank == 0:
            runs.finish(checkpoint, cfg.out, cfg.steps)  # and gives up the run folder's lock
        return rows
    rows += watcher.begin(start, rollout, policy, processor)  # the run's first line; [] or the step-0 held-out row
    with runs.stop_signals() as stop, tqdm(total=cfg.steps, initial=start - 1, disable=rank != 0, desc="grpo",
                                      dynamic_ncols=True) as bar:
        for step in range(start, cfg.steps + 1):
            t0 = time.time()
            runs.seed_step(cfg, step, rank)
            lr = set_lr(optimizer, cfg, step)
            everyone = runs.step_prompts(train_set, cfg, step)
            class_counts.update(s.label for s in everyone)
            prompts = everyone[rank::world]  # this rank's P_r = P / world prompts
            ids, texts, mask, batches = rollout(policy, processor, prompts, cfg)  # [P_r·G, T] sampled o_i
            total, parts, logged = score(prompts, texts, processor, cfg, class_counts)  # [P_r·G] r_i
            advantages = group_advantages(total, cfg.group_size)  # [P_r·G] Â_i
            stats = train_step(policy, ref, optimizer, batches, ids, mask, advantages, cfg, device)  # eq. (3), AdamW
            rows.append(watch.metrics_row(step, total, parts, logged, mask, stats, lr, time.time() - t0, rows, cfg,
                                          device))
            watcher.step(step, rows[-1], prompts, texts, parts, total, advantages)  # samples.jsonl; heldout_* keys
            if rank == 0:
                runs.append_metrics(cfg.out, rows[-1])
            bar.update(1)
            bar.set_postfix(reward=f"{rows[-1]['reward']:.3f}", acc=f"{rows[-1]['accuracy']:.2f}")
            stopping = runs.all_reduce({"stop": stop["signal"]}, device)["stop"] > 0  # any rank signalled: all stop
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                runs.save(policy, processor, optimizer, cfg.out, step, run_settings(cfg), cfg.keep,
                          final=step == cfg.steps)
            if stopping:
                if rank == 0:
                    print(f"\nstopped at step {step}; resume with --resume {cfg.out}", file=sys.stderr)
                break
    watcher.summary(rows)
    runs.release()  # the run folder's lock
    if stopping:  # saved; the caller learns that the run stopped early, not that it finished
        raise runs.Stopped(stop["signal"] or signal.SIGTERM)
    return rows


def prepare_run(cfg, world, device):
    """(checkpoint to resume from or None, training, held-out questions), after the checks a user's mistake can fail."""
    if cfg.prompts_per_step % world:
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} must be a multiple of the {world} ranks: "
                         "each rank owns whole groups")
    checkpoint = runs.open_run(cfg.out, cfg.resume, device)  # rank 0 holds the run folder's lock from here on
    # first use builds the tiny model and the synthetic set: once per machine, while the other ranks wait
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        if cfg.model == "tiny":
            tiny.build_tiny()
        if cfg.data is None:
            synth.ensure_synthetic()
    dist.barrier()
    return checkpoint, *load_data(cfg)


def run_settings(cfg):
    """The config as saved with a checkpoint, for --resume: the run's settings, not --plan's."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in PLAN_ONLY}


# ----------------------------------------------------------------------------- command line

def shown_default(field):
    """--help's default: one value where the tiny and the real run agree, else both."""
    tiny_value, real_value = TINY.get(field.name, field.default), REAL.get(field.name, field.default)
    return tiny_value if tiny_value == real_value else f"tiny {tiny_value}, else {real_value}"


def parse_config(argv=None):
    """Config from the command line, not yet resolved. With --resume the saved run's config is the base and the
    flags given now override it (e.g. --steps 2000 to train further)."""
    p = cli.parser("GRPO + ROAM training of Qwen2.5-VL (AnomalyR1). python grpo.py | torchrun --nproc_per_node=N "
                   "grpo.py", prog="grpo.py")  # its name in every error line, run however it is run
    cli.add_flags(p, Config, shown_default)
    given = cli.given(p, argv)
    if given.get("plan") and "model" not in given:
        given["model"] = "qwen2.5-vl-3b"
    names = {f.name for f in dataclasses.fields(Config)} - {"out", "resume", *PLAN_ONLY}
    saved = runs.resumed_settings(given["resume"], given, names) if given.get("resume") else {}
    return Config(**{**saved, **given})


def main(argv=None):
    with cli.user_errors("grpo.py"):
        cfg = parse_config(argv)
        if cfg.plan:
            import plan  # here, not at the top: it loads transformers' Qwen2.5-VL modelling (~4 s) for --plan alone
            print(plan.for_run(resolve(dataclasses.replace(cfg, dtype=cfg.dtype or "bf16"))))  # the plan is for GPUs
            return 0
    status = 0
    try:
        try:
            train(cfg)
        except runs.Stopped as stopped:  # Ctrl-C or SIGTERM: saved, and the status says so, as a shell reports it
            status = 128 + stopped.signum
        # rank 0 may still be writing the final checkpoint: no rank tears the group down under it (without this
        # barrier about 1 torchrun in 6 ended rc=1, rank 1 SIGABRT)
        dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
