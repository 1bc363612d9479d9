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

        J(θ) = 1/G Σ_i 1/|o_i| Σ_t ( min(ρ_i,t Â_i, clip(ρ_i,t, 1-ε, 1+ε) Â_i) - β D_i,t )     norm="seq" (paper)
        J(θ) = 1/Σ_i |o_i| Σ_i Σ_t ( same summand )                                             norm="token" (DAPO/TRL)

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
    mask = mask.to(logp.dtype)  # [N, T]
    if old_logp is None:
        old_logp = logp.detach()  # ρ is exactly 1, but its gradient is still ∇ log π_θ
    # clamp: a garbage log-prob (e.g. on padding) must not make exp() inf, since inf · mask 0 = NaN
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # [N, T]
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
        stats = {
            "kl": ((kl * mask).sum() / n).item(),
            "clip_fraction": ((clipped.to(mask.dtype) * mask).sum() / n).item(),
            "ratio_mean": ((ratio * mask).sum() / n).item(),
        }
    return loss, stats

# ----------------------------------------------------------------------------- training
# One training step, end to end:
#   rollout  each rank samples G completions for each of its prompts in one generate call (eval mode); each
#            prompt is prefilled once and its KV cache copied G times
#   score    roam.py rewards per completion, summed; Â = z-score within each group. A rank owns whole groups,
#            so advantages need no communication.
#   update   log π_θ of the sampled tokens and log π_ref from the frozen reference, each one forward per group
#            over one packed row [q | o_1 | … | o_G] (anomalyr1.packed_logprobs; the policy's is gradient-
#            checkpointed), grpo_loss, AdamW; FSDP2 averages the gradients over ranks.
# Randomness is re-seeded from (seed, step, rank) at the start of every step and the data position is the step
# number, so `--resume` replays exactly what the uninterrupted run would have done.
import collections
import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import threading
import time
import warnings

import torch.distributed as dist

import anomalyr1
import cli
import data
import roam
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
    temperature: float = option(1.0, "sampling temperature of the rollout")
    beta: float = option(0.04, "β, weight of the KL to the reference model (0: no reference model is built)")
    clip_eps: float = option(0.2, "ε, the clip range of eq. (4)")
    norm: str = option("seq", "'seq': mean over each completion's tokens, then over completions (eq. 3); "
                              "'token': mean over all tokens (DAPO/TRL)")
    inner_steps: int = option(1, "μ, optimizer steps per rollout (1: on-policy, ρ = 1 exactly)")
    # optimisation
    lr: float | None = option(None, "AdamW learning rate after the warm-up")
    warmup_steps: int | None = option(None, "steps of linear learning-rate warm-up")
    max_grad_norm: float = option(1.0, "gradient-norm clip")
    logprob_batch: int | None = option(None, "completions per log-prob forward/backward (default: G)")
    grad_checkpointing: bool = option(True, "recompute activations in backward: less memory, slower")
    rollout_reshard: bool = option(False, "FSDP: reshard the layers after every decode step (less memory during "
                                          "generate, one all-gather per layer per token)")
    # run
    out: str | None = option(None, "run folder: metrics.jsonl, step-NNNNNN/, final/ (default: the --resume "
                                   "folder, else runs/grpo)")
    resume: str | None = option(None, "continue the run in this folder from its newest checkpoint")
    save_every: int | None = option(None, "checkpoint every K steps (and at the end)")
    keep: int = option(2, "step-NNNNNN/ checkpoints kept; older ones are deleted")
    seed: int = option(0, "seed of the few-shot split, the data order and the sampling")
    # --plan
    plan: bool = option(False, "print the per-GPU memory plan of these settings and exit (needs no weights)")
    gpus: int = option(4, "--plan: number of GPUs")
    gpu_gb: float = option(48.0, "--plan: memory per GPU, GiB")


# TINY: `torchrun --nproc_per_node=2 grpo.py` on 2 CPU cores, cold cache included, in a few minutes. The tiny model
# cannot really see (its warm-up taught the format and random answers), so what it learns here is ROAM's point:
# reasoning that concludes the option it answers (the "consistency" metric), hence a high lr. Its replies are
# ~30 tokens. REAL is the paper's run (§4.1 and the authors' code): G = 8, 8 prompts per step, 256 new tokens.
TINY = dict(prompts_per_step=8, steps=40, max_completion=48, lr=1e-3, warmup_steps=2, shots=0, save_every=20)
REAL = dict(prompts_per_step=8, steps=1000, max_completion=256, lr=1e-6, warmup_steps=10, shots=1, save_every=100)
REWARD_NAMES = sorted(roam.REWARDS) + ["rare"]


def resolve(cfg):
    """Fill the model-dependent defaults (None fields) and reject what a user can get wrong."""
    defaults = TINY if cfg.model == "tiny" else REAL
    cfg = dataclasses.replace(cfg, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})
    cfg.out = cfg.out or cfg.resume or os.path.join("runs", "grpo")
    unknown = [n for n in cfg.rewards.split(",") if n.strip() not in REWARD_NAMES]
    checks = [
        (not unknown, f"--rewards: unknown reward {', '.join(map(repr, unknown))}; "
                      f"choose from {', '.join(REWARD_NAMES)}"),
        (cfg.norm in ("seq", "token"), f"--norm must be 'seq' or 'token', got {cfg.norm!r}"),
        (cfg.templates in ("similar", "random"), f"--templates must be 'similar' or 'random', got {cfg.templates!r}"),
        (cfg.group_size >= 2, "--group-size must be >= 2: the advantage is a z-score within the group"),
        (min(cfg.prompts_per_step, cfg.steps, cfg.max_completion, cfg.inner_steps, cfg.keep, cfg.save_every,
             cfg.logprob_batch or 1) >= 1,
         "--prompts-per-step, --steps, --max-completion, --inner-steps, --keep, --save-every, --logprob-batch: >= 1"),
        (cfg.shots >= 0 and cfg.warmup_steps >= 0 and cfg.lr > 0, "--shots, --warmup-steps must be >= 0, --lr > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    return cfg


def reward_names(cfg):
    return [n.strip() for n in cfg.rewards.split(",") if n.strip()]


@contextlib.contextmanager
def user_errors():
    """A mistake the user can fix (a bad path or flag) prints one line and exits 2, without a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# ----------------------------------------------------------------------------- distributed and models

def setup_distributed():
    """(rank, world, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; `python grpo.py` is one process, no FSDP."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    # torch takes every core by default; N processes on one machine then oversubscribe them (measured: 10x slower)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def all_reduce(values, world, device, op="sum"):
    """{name: float} summed (or maxed) over ranks, in one all_reduce."""
    values = {k: float(v) for k, v in values.items()}
    if world == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return dict(zip(values, t.tolist()))


def peak_memory_gib(device):
    """This process's peak so far: memory torch allocated on the GPU, or the resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def build_models(cfg, device, world, weights=None):
    """(policy, ref, processor). Policy: fp32 master weights (bf16 compute on CUDA), gradient checkpointing, FSDP2
    over `world` ranks. Ref: the frozen starting model, sharded the same way; None when β = 0.
    `weights`: a checkpoint folder to start the policy from (--resume); the reference is always cfg.model."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
    on_cuda = device.type == "cuda"
    policy, processor = anomalyr1.load(weights or cfg.model, device=device, dtype=torch.float32)
    if cfg.grad_checkpointing:
        policy.activation_checkpointing_enable({"use_reentrant": False})
    ref = None
    if cfg.beta != 0:
        ref, _ = anomalyr1.load(cfg.model, device=device, dtype=torch.bfloat16 if on_cuda else torch.float32)
        ref.eval().requires_grad_(False)
    if world > 1:
        mesh = init_device_mesh(device.type, (world,))
        # GPUs: compute in bf16, reduce gradients and keep master weights in fp32. CPU: fp32 throughout.
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if on_cuda else \
            MixedPrecisionPolicy()
        # FSDP2 warns when the root returns a view (the logits slice, the per-image features): nothing here writes
        # into them in place, and the gradients equal the unsharded model's (checked on 2 CPU ranks)
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        for model in [m for m in (policy, ref) if m is not None]:
            for block in model.model.visual.blocks:             # each vision block,
                fully_shard(block, mesh=mesh, mp_policy=mp)
            for layer in model.model.language_model.layers:     # each decoder layer,
                fully_shard(layer, mesh=mesh, mp_policy=mp)
            fully_shard(model, mesh=mesh, mp_policy=mp)         # then the root: embeddings, patch merger, norm
        # generate() is called outside forward(): registering it runs FSDP's gather hooks around it (else "mixed
        # torch.Tensor and DTensor", FACTS.md)
        register_fsdp_forward_method(policy, "generate")
    return policy, ref, processor


def fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


# ----------------------------------------------------------------------------- data order

def load_data(cfg):
    """The few-shot training questions (§3.5: 600 images). Grounding questions only with the IoU reward."""
    if cfg.data is None:
        root, path = data.ensure_synthetic()
    else:
        path, root = cfg.data, cfg.root or os.path.dirname(os.path.abspath(cfg.data))
    train_set, _ = data.few_shot(data.load_mmad(path, root), n_images=cfg.n_images, seed=cfg.seed)
    # box_to_input_frame maps gold boxes into the model's input frame; without it IoU would compare wrong frames
    grounding = "iou" in reward_names(cfg) and hasattr(anomalyr1, "box_to_input_frame")
    train_set = [s for s in train_set if grounding or s.question_type != data.GROUNDING]
    if not train_set:
        raise ValueError(f"{path}: no training questions (Defect Grounding ones need --rewards with iou)")
    return train_set


@functools.lru_cache(maxsize=4)
def epoch_order(n, seed):
    return random.Random(seed).sample(range(n), n)


def step_prompts(train_set, cfg, step):
    """The P prompts of `step` (1-based), identical on every rank: global prompts [(step-1)·P, step·P) of the
    concatenated epochs, each epoch a permutation seeded by seed + epoch. Rank r then takes every world-th."""
    P, n = cfg.prompts_per_step, len(train_set)
    return [train_set[epoch_order(n, cfg.seed + i // n)[i % n]] for i in range((step - 1) * P, step * P)]


def seed_step(cfg, step, rank):
    """Sampling randomness is a function of (seed, step, rank) alone: no RNG state is needed to resume."""
    s = cfg.seed * 1_000_003 + step * 1009 + rank
    random.seed(s)
    torch.manual_seed(s)  # also seeds CUDA


# ----------------------------------------------------------------------------- rollout, rewards, update

@torch.no_grad()
def rollout(policy, processor, prompts, cfg, fsdp):
    """G completions per prompt, one generate call: ids [P_r·G, T], texts, mask [P_r·G, T] (1 up to and including
    the first end-of-turn), and the prompts as P_r one-prompt batches for scoring and the update. Each prompt is
    processed and prefilled once, images included (anomalyr1.generate)."""
    policy.eval()  # checkpointed layers in train mode drop the KV cache (FACTS.md)
    batch = anomalyr1.prepare(processor, prompts, shots=cfg.shots, templates=cfg.templates)
    if fsdp and not cfg.rollout_reshard:
        # keep every layer gathered through all decode steps: one all-gather per layer, not one per layer per token
        policy.set_reshard_after_forward(False)
    try:
        ids, texts = anomalyr1.generate(policy, processor, batch, max_new_tokens=cfg.max_completion,
                                        temperature=cfg.temperature, num_return_sequences=cfg.group_size)
    finally:
        if fsdp:
            for m in fsdp_modules(policy):
                m.reshard()
            policy.set_reshard_after_forward(True)                 # the defaults: reshard every layer after
            policy.set_reshard_after_forward(False, recurse=False)  # forward, keep the root (used first in backward)
        policy.train()
    ids = ids.cpu()                                                                  # [P_r·G, T]
    mask = anomalyr1.completion_mask(ids, anomalyr1.special_id(processor, anomalyr1.END_OF_TURN))  # [P_r·G, T]
    return ids, texts, mask, anomalyr1.split_prompts(batch, policy.config.vision_start_token_id)


def gold_answer(sample, batch, processor):
    """The gold answer as the model has to write it: a grounding box moves from original pixels to the frame of
    the image the model sees (the resized query image, the last image of the prompt)."""
    if sample.question_type != data.GROUNDING:
        return sample.answer
    from PIL import Image
    with Image.open(sample.path()) as im:
        original = im.size
    _, h, w = batch["image_grid_thw"][-1].tolist()  # patches
    patch = processor.image_processor.patch_size
    box = json.loads(sample.answer)["bbox_2d"]
    return json.dumps({"bbox_2d": anomalyr1.box_to_input_frame(box, original, (w * patch, h * patch))})


def score(prompts, texts, batches, processor, cfg, class_counts, extra_reward=None):
    """Rewards of the P_r·G completions: the total [N] (the sum of --rewards, + extra_reward), each part
    {name: [N]}, and two things logged whatever is trained on: accuracy and reasoning/answer consistency."""
    G = cfg.group_size
    parts, logged = collections.defaultdict(list), collections.defaultdict(list)
    for i, (sample, batch) in enumerate(zip(prompts, batches)):
        group = texts[i * G:(i + 1) * G]
        answer = gold_answer(sample, batch, processor)
        scores = roam.score_group(reward_names(cfg), group, answer, sample.options, label=sample.label,
                                  class_counts=class_counts)
        for name, values in scores.items():
            parts[name] += values
        if extra_reward is not None:
            parts["extra"] += [float(extra_reward(t, sample)) for t in group]
        for text in group:
            logged["accuracy"].append(roam.accuracy_reward(text, answer, sample.options))
            # what ROAM is for (§3.3): the reasoning concludes the very option the answer gives
            p = roam.parse(text)
            think, said = roam.extract_choice(p.think, sample.options), roam.extract_choice(p.answer, sample.options)
            logged["consistency"].append(float(p.well_formed and think is not None and think == said))
    parts = {name: torch.tensor(v) for name, v in parts.items()}                 # {name: [N]}
    return sum(parts.values()), parts, {k: torch.tensor(v) for k, v in logged.items()}  # [N], {name: [N]}, {[N]}


def train_step(policy, ref, optimizer, batches, ids, mask, advantages, cfg, world, device):
    """μ = --inner-steps optimizer steps on one rollout (eq. 3). Micro-batches are at most --logprob-batch
    completions of one prompt, so memory is bounded by one group whatever the step size. Returns stats sums."""
    G, lb = cfg.group_size, cfg.logprob_batch or cfg.group_size
    chunks = []  # (prompt batch, rows of ids, T): completions trimmed to the longest in the chunk
    for i, batch in enumerate(batches):
        for start in range(i * G, (i + 1) * G, lb):
            rows = slice(start, min(start + lb, (i + 1) * G))
            chunks.append((batch, rows, int(mask[rows].sum(1).max())))

    def logprobs(model, batch, rows, T):
        return anomalyr1.packed_logprobs(model, batch, ids[rows, :T])  # [n, T]: the prompt once, then n completions

    with torch.no_grad():
        ref_logp = [logprobs(ref, *c) if ref is not None else None for c in chunks]
        # π_θold: needed only when the same rollout is reused (μ > 1); with μ = 1, ρ = 1 exactly (grpo_loss)
        old_logp = [logprobs(policy, *c) if cfg.inner_steps > 1 else None for c in chunks]
    tokens = all_reduce({"t": mask.sum()}, world, device)["t"]  # completion tokens on all ranks
    stats = collections.Counter()
    for _ in range(cfg.inner_steps):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for (batch, rows, T), ref_l, old_l in zip(chunks, ref_logp, old_logp):
            m = mask[rows, :T].to(device)  # [n, T]
            loss, s = grpo_loss(logprobs(policy, batch, rows, T), old_l, ref_l, advantages[rows].to(device), m,
                                clip_eps=cfg.clip_eps, beta=cfg.beta, norm=cfg.norm)
            # weight each micro-batch so the sum is the loss of the whole step: completions for 'seq', tokens for
            # 'token' (× world: FSDP averages gradients over ranks, which may hold different token counts)
            weight = (rows.stop - rows.start) / len(mask) if cfg.norm == "seq" else m.sum().item() * world / tokens
            (loss * weight).backward()
            loss_sum += loss.item() * weight
            n = m.sum().item()
            stats.update(kl=s["kl"] * n, clip=s["clip_fraction"] * n, stat_tokens=n)
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
        grad_norm = (grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm).item()
        loss_all = all_reduce({"loss": loss_sum}, world, device)["loss"] / world
        if math.isfinite(loss_all) and math.isfinite(grad_norm):  # the same on every rank: they agree to skip
            optimizer.step()
        else:
            optimizer.zero_grad(set_to_none=True)  # a NaN/inf step is dropped, counted, and training goes on
            stats["skipped"] += 1
        stats["loss"] += loss_all / cfg.inner_steps
        stats["grad_norm"] = grad_norm
    return stats


# ----------------------------------------------------------------------------- checkpoints

def checkpoints(out):
    """Complete step-NNNNNN folders in `out`, oldest first (a folder appears only by an atomic rename)."""
    if not os.path.isdir(out):
        return []
    names = [d for d in os.listdir(out) if d.startswith("step-") and d[5:].isdigit()
             and os.path.isfile(os.path.join(out, d, "trainer_state.json"))]
    return [os.path.join(out, d) for d in sorted(names)]


def find_checkpoint(folder):
    found = checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"--resume {folder}: no checkpoint there (a step-NNNNNN/ folder with "
                                "trainer_state.json); pass the --out folder of an earlier run")
    return found[-1]


def save_optimizer(osd, path):
    """AdamW's state as safetensors (never pickle): tensors keyed state.<param>.<key>, param groups as metadata."""
    from safetensors.torch import save_file
    tensors = {f"state.{name}.{k}": v.contiguous() for name, s in osd["state"].items() for k, v in s.items()}
    save_file(tensors, path, metadata={"param_groups": json.dumps(osd["param_groups"])})


def load_optimizer(path):
    from safetensors import safe_open
    from safetensors.torch import load_file
    state = collections.defaultdict(dict)
    for key, v in load_file(path).items():
        name, k = key[len("state."):].rsplit(".", 1)
        state[name][k] = v
    with safe_open(path, "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    return {"state": dict(state), "param_groups": groups}


def publish(tmp, folder):
    """Rename a finished folder into place (atomic); a folder already there is replaced."""
    if os.path.exists(folder):
        old = f"{folder}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def save_checkpoint(policy, processor, optimizer, cfg, step, rank, final=False):
    """DIR/step-NNNNNN/: an HF folder (safetensors weights, config, processor) + the resume state (optimizer as
    safetensors, trainer_state.json). Written to DIR/.tmp-step-NNNNNN and renamed, so a kill mid-save never
    touches the last good checkpoint. `final`: also publish it as DIR/final/. Called by every rank."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    sd = get_model_state_dict(policy, options=options)  # collective: every rank gathers, rank 0 keeps the tensors
    osd = get_optimizer_state_dict(policy, optimizer, options=options)
    if rank != 0:
        return
    name = f"step-{step:06d}"
    folder, tmp = os.path.join(cfg.out, name), os.path.join(cfg.out, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    processor.save_pretrained(tmp)
    save_optimizer(osd, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
        json.dump({"step": step, "next_prompt": step * cfg.prompts_per_step, "config": dataclasses.asdict(cfg),
                   # for the record only: resuming needs no RNG state, every step re-seeds from (seed, step, rank)
                   "python_rng": random.getstate(), "torch_rng": torch.get_rng_state().numpy().tobytes().hex()}, f)
    if policy.lm_head.weight is policy.get_input_embeddings().weight:
        sd.pop("lm_head.weight", None)  # tied to the embeddings: stored once (FSDP's full state dict has two copies)
    # last: save_pretrained(state_dict=sd) empties sd. FSDP2 renames the class FSDP<class>; the config must
    # name the plain class so AutoModel and friends load the folder.
    policy.save_pretrained(tmp, state_dict=sd, safe_serialization=True)
    fix_architectures(tmp)
    publish(tmp, folder)
    for old in checkpoints(cfg.out)[:-cfg.keep]:
        shutil.rmtree(old, ignore_errors=True)
    if final:
        tmp = os.path.join(cfg.out, ".tmp-final")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("optimizer.safetensors", "trainer_state.json"))
        publish(tmp, os.path.join(cfg.out, "final"))


def fix_architectures(folder):
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if any(a.startswith("FSDP") for a in config.get("architectures") or []):
        config["architectures"] = [a.removeprefix("FSDP") for a in config["architectures"]]
        with open(path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def read_metrics(out, up_to_step):
    """The metric rows of steps <= up_to_step (lines written after the checkpoint are dropped on resume)."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step]


def write_metrics(out, rows):
    tmp = os.path.join(out, "metrics.jsonl.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, os.path.join(out, "metrics.jsonl"))


# ----------------------------------------------------------------------------- the loop

def train(cfg, extra_reward=None):
    """GRPO with `cfg`; returns the metric rows (one dict per step, the same on every rank). `extra_reward`:
    an optional fn(completion_text, sample) -> float added to every completion's reward."""
    from tqdm import tqdm
    cfg = resolve(cfg)
    rank, world, device = setup_distributed()
    with user_errors():
        if cfg.prompts_per_step % world:
            raise ValueError(f"--prompts-per-step {cfg.prompts_per_step} must be a multiple of the {world} ranks: "
                             "each rank owns whole groups")
        checkpoint = find_checkpoint(cfg.resume) if cfg.resume else None
        if not cfg.resume and (checkpoints(cfg.out) or os.path.isfile(os.path.join(cfg.out, "metrics.jsonl"))):
            raise ValueError(f"{cfg.out} already holds a run: continue it with --resume {cfg.out}, "
                             "or pass a new --out")
        if cfg.data is not None and not os.path.isfile(cfg.data):
            raise FileNotFoundError(f"--data {cfg.data}: no such file (an MMAD-schema json such as mmad.json)")
        # first use builds the tiny model and the synthetic set: once per machine, on all its cores, while the
        # other ranks wait
        if int(os.environ.get("LOCAL_RANK", 0)) == 0:
            threads = torch.get_num_threads()
            torch.set_num_threads(os.cpu_count() or 1)
            if cfg.model == "tiny":
                anomalyr1.build_tiny()
            if cfg.data is None:
                data.ensure_synthetic()
            torch.set_num_threads(threads)
        if world > 1:
            dist.barrier()
        train_set = load_data(cfg)
        policy, ref, processor = build_models(cfg, device, world, weights=checkpoint)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    start, rows = 1, []
    if checkpoint:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(policy, optimizer, load_optimizer(os.path.join(checkpoint, "optimizer.safetensors")),
                                 options=StateDictOptions(full_state_dict=True))
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            start = json.load(f)["step"] + 1
        rows = read_metrics(cfg.resume, start - 1)
    if rank == 0:
        os.makedirs(cfg.out, exist_ok=True)
        write_metrics(cfg.out, rows)
    # LR-IAD's class weights: label counts of the prompts seen so far (replayed on resume)
    class_counts = collections.Counter(s.label for step in range(1, start) for s in step_prompts(train_set, cfg, step))
    skipped = rows[-1]["skipped"] if rows else 0
    if start > cfg.steps:
        if rank == 0:
            print(f"grpo: {cfg.resume} is already at step {start - 1} of --steps {cfg.steps}; nothing to do "
                  "(raise --steps to train further)", file=sys.stderr)
        return rows
    fsdp = world > 1
    # one CUDA process: bf16 autocast; under FSDP2 the MixedPrecisionPolicy casts
    compute = (lambda: torch.autocast("cuda", torch.bfloat16)) if device.type == "cuda" and not fsdp else \
        contextlib.nullcontext

    stop = {"signal": 0}  # SIGTERM/SIGINT: finish the step, save, exit cleanly
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop.update(signal=signum))
    if rank == 0:
        print(f"grpo: {len(train_set)} questions on {len({s.image for s in train_set})} images, {world} rank(s) on "
              f"{device.type}, {cfg.prompts_per_step} prompts x G={cfg.group_size} per step, "
              f"steps {start}..{cfg.steps}, rewards {cfg.rewards} -> {cfg.out}", file=sys.stderr)
    bar = tqdm(total=cfg.steps, initial=start - 1, disable=rank != 0, desc="grpo", dynamic_ncols=True)
    try:
        for step in range(start, cfg.steps + 1):
            t0 = time.time()
            seed_step(cfg, step, rank)
            lr = cfg.lr * min(1.0, step / max(1, cfg.warmup_steps))  # linear warm-up, then constant
            for group in optimizer.param_groups:
                group["lr"] = lr
            everyone = step_prompts(train_set, cfg, step)
            class_counts.update(s.label for s in everyone)
            prompts = everyone[rank::world]  # this rank's P_r = P / world prompts
            with compute():
                ids, texts, mask, batches = rollout(policy, processor, prompts, cfg, fsdp)
                total, parts, logged = score(prompts, texts, batches, processor, cfg, class_counts, extra_reward)
                advantages = group_advantages(total, cfg.group_size)  # [P_r·G]
                stats = train_step(policy, ref, optimizer, batches, ids, mask, advantages, cfg, world, device)

            groups = total.view(-1, cfg.group_size)  # [P_r, G]
            sums = {"reward": total.sum(), **{f"reward/{n}": v.sum() for n, v in parts.items()},
                    **{n: v.sum() for n, v in logged.items()},
                    "zero_std": (groups.amax(1) == groups.amin(1)).sum(), "tokens": mask.sum(),
                    "kl": stats["kl"], "clip": stats["clip"], "stat_tokens": stats["stat_tokens"],
                    "stop": stop["signal"] != 0}
            sums = all_reduce(sums, world, device)
            N, seconds = len(total) * world, time.time() - t0
            skipped += stats["skipped"]
            row = {"step": step, "reward": sums["reward"] / N,
                   **{k: sums[k] / N for k in sums if k.startswith("reward/")},
                   "accuracy": sums["accuracy"] / N, "consistency": sums["consistency"] / N,
                   "kl": sums["kl"] / max(1, sums["stat_tokens"]),
                   "clip_fraction": sums["clip"] / max(1, sums["stat_tokens"]),
                   "completion_length": sums["tokens"] / N,
                   "zero_std_fraction": sums["zero_std"] / (N // cfg.group_size),
                   "loss": stats["loss"], "grad_norm": stats["grad_norm"], "lr": lr, "skipped": skipped,
                   "seconds": seconds, "tokens_per_s": sums["tokens"] / seconds,
                   # the planner's per-GPU prediction (python grpo.py --plan) is checked against this
                   "peak_memory_gib": all_reduce({"m": peak_memory_gib(device)}, world, device, op="max")["m"]}
            rows.append(row)
            if rank == 0:
                with open(os.path.join(cfg.out, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(row) + "\n")
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.2f}", kl=f"{row['kl']:.4f}")
            stopping = sums["stop"] > 0  # any rank signalled: all agree through the all_reduce
            if step % cfg.save_every == 0 or step == cfg.steps or stopping:
                save_checkpoint(policy, processor, optimizer, cfg, step, rank, final=step == cfg.steps)
            if stopping:
                if rank == 0:
                    print(f"\nstopped at step {step}; resume with --resume {cfg.out}", file=sys.stderr)
                break
    finally:
        bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return rows


# ----------------------------------------------------------------------------- command line

def parse_config(argv=None):
    """Config from the command line. With --resume the saved run's config is the base and the flags given now
    override it (e.g. --steps 2000 to train further)."""
    p = cli.parser("GRPO + ROAM training of Qwen2.5-VL (AnomalyR1). python grpo.py | torchrun --nproc_per_node=N grpo.py")
    cli.add_flags(p, Config, lambda f: f"tiny {TINY[f.name]}, else {REAL[f.name]}" if f.name in TINY else f.default)
    given = cli.given(p, argv)
    if given.get("plan") and "model" not in given:
        given["model"] = "qwen2.5-vl-3b"
    saved = {}
    if given.get("resume"):
        with open(os.path.join(find_checkpoint(given["resume"]), "trainer_state.json")) as f:
            saved = json.load(f)["config"]
        names = {f.name for f in dataclasses.fields(Config)}
        saved = {k: v for k, v in saved.items() if k in names and k not in ("out", "resume")}
    return resolve(Config(**{**saved, **given}))


def print_plan(cfg):
    import plan
    model = anomalyr1.build_tiny() if cfg.model == "tiny" else cfg.model
    print(plan.format_table(plan.plan(
        model, gpus=cfg.gpus, group_size=cfg.group_size, logprob_batch=cfg.logprob_batch,
        prompts_per_step=cfg.prompts_per_step, max_completion=cfg.max_completion, templates=cfg.shots,
        beta=cfg.beta, grad_checkpointing=cfg.grad_checkpointing, rollout_unsharded=not cfg.rollout_reshard,
        gpu_gb=cfg.gpu_gb)))


def main(argv=None):
    with user_errors():
        cfg = parse_config(argv)
        if cfg.plan:
            print_plan(cfg)
            return 0
    try:
        train(cfg)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
