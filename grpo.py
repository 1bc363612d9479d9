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


def grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps=0.2, beta=0.04, norm="seq"):
    """-J_GRPO (eq. 3) over N completions, and a few detached stats to log.
    logp [N, T]: log π_θ of the sampled completion tokens, carries grad.
    old_logp [N, T] or None: log π_θold at sampling time; None = on-policy (one step per rollout), so ρ = 1.
    ref_logp [N, T] or None (only with beta == 0): log π_ref, the frozen starting model.
    advantages [N]; mask [N, T]: 1 on completion tokens up to and including the first end-of-turn.
    norm: "seq" = the paper's 1/G Σ_i 1/|o_i| Σ_t; "token" = Σ over all tokens / their count (DAPO/TRL),
    so long completions are not down-weighted."""
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
        # eq. (3): mean over each completion's own tokens, then over completions: every answer weighs
        # the same however long it is. clamp: an empty completion gives 0, not 0/0 = NaN.
        objective = (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    else:
        objective = per_token.sum() / mask.sum().clamp(min=1)
    loss = -objective

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
