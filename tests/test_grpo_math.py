"""The GRPO math of grpo.py (eq. 1, 3-6), each checked against numbers worked out by hand."""
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
from grpo import group_advantages, grpo_loss, kl_k3

# ----------------------------------------------------------------------------- group_advantages


def test_group_advantages_hand_example():
    # G = 4, two groups: [1, 0, 0, 0] and [.5, .5, .5, .5] (consecutive rows, not strided).
    # group 1: mean = .25; deviations [.75, -.25, -.25, -.25]; Σ dev² = .5625 + 3·.0625 = .75;
    #          Bessel var = .75 / 3 = .25, std = .5  (population std would be sqrt(.1875) = .433)
    #          Â = dev / (.5 + 1e-4) = dev / .5001
    # group 2: constant -> 0
    adv = group_advantages(torch.tensor([1.0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5]), group_size=4)
    d = 0.5 + 1e-4
    expected = [0.75 / d, -0.25 / d, -0.25 / d, -0.25 / d, 0.0, 0.0, 0.0, 0.0]
    assert adv.shape == (8,)
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)
    assert adv[0].item() == pytest.approx(1.49970006, abs=1e-6)


def test_group_advantages_eps():
    # G = 2, [0, 1]: mean .5, Bessel std = sqrt((.25 + .25) / 1) = .7071068; with eps = .1:
    # Â = ±.5 / (.7071068 + .1) = ±.6194650
    adv = group_advantages(torch.tensor([0.0, 1.0]), group_size=2, eps=0.1)
    assert adv.tolist() == pytest.approx([-0.5 / (math.sqrt(0.5) + 0.1), 0.5 / (math.sqrt(0.5) + 0.1)], abs=1e-6)


def test_group_advantages_constant_group_is_exactly_zero():
    # 0.7 is not exact in float32, and the float mean of eight of them misses 0.7 by an ulp;
    # a constant group must still give exactly 0, not rounding noise / eps.
    for value in [0.7, 0.1, 1.05, 0.0]:
        for g in [2, 3, 7, 8]:
            adv = group_advantages(torch.full((2 * g,), value), group_size=g)
            assert (adv == 0).all(), (value, g, adv)


def test_group_advantages_zero_mean_per_group():
    torch.manual_seed(0)
    adv = group_advantages(torch.rand(24), group_size=6)
    assert torch.allclose(adv.view(4, 6).mean(dim=1), torch.zeros(4), atol=1e-5)
    # and unit (Bessel) std, up to eps
    assert torch.allclose(adv.view(4, 6).std(dim=1), torch.ones(4), atol=1e-2)


def test_group_advantages_bad_group_size():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(7), group_size=4)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.zeros(4), group_size=1)

# ----------------------------------------------------------------------------- kl_k3


def test_kl_k3_zero_when_equal():
    torch.manual_seed(0)
    logp = -torch.rand(3, 5) * 5
    assert (kl_k3(logp, logp.clone()) == 0).all()


def test_kl_k3_hand_values():
    # π_θ = .5, π_ref = .25: π_ref/π_θ = .5 -> .5 - log .5 - 1 = log 2 - .5 = .1931472
    # π_θ = .25, π_ref = .5: π_ref/π_θ = 2 -> 2 - log 2 - 1 = 1 - log 2 = .3068528  (KL is not symmetric)
    logp = torch.tensor([[math.log(0.5), math.log(0.25)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.5)]])
    kl = kl_k3(logp, ref)
    assert kl.shape == (1, 2)
    assert kl[0].tolist() == pytest.approx([math.log(2) - 0.5, 1 - math.log(2)], abs=1e-6)


def test_kl_k3_non_negative_and_finite():
    torch.manual_seed(0)
    logp, ref = -torch.rand(64, 32) * 30, -torch.rand(64, 32) * 30
    kl = kl_k3(logp, ref)
    assert (kl >= 0).all() and torch.isfinite(kl).all()

# ----------------------------------------------------------------------------- grpo_loss
# The hand example: N = 2 completions, T = 3, row 1's last token is padding; ε = .2.
#   row 0, Â = 1.5:  π_θ = [.5, .6, .2], π_old = [.5, .4, .4] -> ρ = [1, 1.5, .5]
#                    π_ref = [.5, .3, .4]                      -> π_ref/π_θ = [1, .5, 2]
#   row 1, Â = -.5:  π_θ = [.2, .55, .1], π_old = [.4, .5, .4] -> ρ = [.5, 1.1, (.25 pad)]
#                    π_ref = [.4, .55, .9]                     -> π_ref/π_θ = [2, 1, (9 pad)]
# eq. (4), M = min(ρÂ, clip(ρ, .8, 1.2)Â):
#   row 0: ρ=1:   min(1.5, 1.5) = 1.5
#          ρ=1.5: min(2.25, 1.2·1.5 = 1.8) = 1.8          <- clipped
#          ρ=.5:  min(.75, .8·1.5 = 1.2) = .75            (pessimistic: the unclipped term wins)
#   row 1: ρ=.5:  min(-.25, .8·-.5 = -.4) = -.4           <- clipped
#          ρ=1.1: min(-.55, -.55) = -.55
#          pad ρ=.25 would be clipped (min(-.125, -.4)) if the mask were ignored
# k3 (eq. 5-6), x = π_ref/π_θ: x - log x - 1
#   row 0: [0, log 2 - .5, 1 - log 2]   (these two sum to exactly .5)
#   row 1: [1 - log 2, 0]               (pad: 9 - log 9 - 1 = 5.80 if the mask were ignored)
P_THETA = [[0.5, 0.6, 0.2], [0.2, 0.55, 0.1]]
P_OLD = [[0.5, 0.4, 0.4], [0.4, 0.5, 0.4]]
P_REF = [[0.5, 0.3, 0.4], [0.4, 0.55, 0.9]]
ADV = [1.5, -0.5]
MASK = [[1, 1, 1], [1, 1, 0]]
LN2 = math.log(2)


def hand_inputs():
    logp = torch.tensor(P_THETA).log().requires_grad_()
    return logp, torch.tensor(P_OLD).log(), torch.tensor(P_REF).log(), torch.tensor(ADV), torch.tensor(MASK)


def test_grpo_loss_hand_example_seq_and_token():
    beta = 0.1
    # per-token objective M - β·k3:
    row0 = [1.5 - beta * 0.0, 1.8 - beta * (LN2 - 0.5), 0.75 - beta * (1 - LN2)]  # sums to 4.05 - .1·.5 = 4.0
    row1 = [-0.4 - beta * (1 - LN2), -0.55 - beta * 0.0]                           # sums to -.98068528
    # seq (eq. 3): (4.0/3 + -.98068528/2) / 2 = (1.3333333 - .4903426) / 2 = .4214953
    expected_seq = -((sum(row0) / 3 + sum(row1) / 2) / 2)
    # token: (4.0 - .98068528) / 5 = .6038629
    expected_token = -((sum(row0) + sum(row1)) / 5)
    assert expected_seq == pytest.approx(-0.4214953, abs=1e-6)
    assert expected_token == pytest.approx(-0.6038629, abs=1e-6)

    logp, old, ref, adv, mask = hand_inputs()
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=beta, norm="seq")
    assert loss.item() == pytest.approx(expected_seq, abs=1e-5)
    loss, stats = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=beta, norm="token")
    assert loss.item() == pytest.approx(expected_token, abs=1e-5)
    # clipped tokens: (row 0, ρ=1.5, Â>0) and (row 1, ρ=.5, Â<0), out of 5 real tokens
    assert stats["clip_fraction"] == pytest.approx(2 / 5, abs=1e-6)
    # masked mean k3: (0 + (log 2 - .5) + (1 - log 2) + (1 - log 2) + 0) / 5 = (1.5 - log 2) / 5 = .1613706
    assert stats["kl"] == pytest.approx((1.5 - LN2) / 5, abs=1e-6)
    # ratio mean over real tokens: (1 + 1.5 + .5 + .5 + 1.1) / 5 = .92
    assert stats["ratio_mean"] == pytest.approx(0.92, abs=1e-5)


def test_grpo_loss_hand_gradient_clipped_tokens_get_none():
    # beta = 0 and no reference model. ∂(ρÂ)/∂logp = ρÂ on unclipped tokens, 0 where the clip is active.
    # seq norm: ∂loss/∂logp_i,t = -ρ_i,t Â_i / |o_i| / N
    #   row 0: [-1·1.5/3/2, 0 (clipped), -.5·1.5/3/2] = [-.25, 0, -.125]
    #   row 1: [0 (clipped), -1.1·-.5/2/2, 0 (pad)]   = [0, .1375, 0]
    # loss: M sums 1.5 + 1.8 + .75 = 4.05 and -.4 - .55 = -.95 -> -(4.05/3 - .95/2)/2 = -.4375
    logp, old, _, adv, mask = hand_inputs()
    loss, stats = grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, beta=0.0, norm="seq")
    loss.backward()
    assert loss.item() == pytest.approx(-0.4375, abs=1e-5)
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, 0.0, -0.125], [0.0, 0.1375, 0.0]]), atol=1e-6)
    assert stats["kl"] == 0.0


def test_grpo_loss_on_policy_gradient_is_advantage_over_length():
    # old = None (ρ = 1) and π_ref = π_θ (k3 and its gradient vanish): each real token's gradient is
    # -Â_i / |o_i| / N (seq) or -Â_i / Σ|o| (token), whatever beta is; padding gets 0.
    torch.manual_seed(0)
    lengths = [4, 2, 5, 1]  # |o_i|, Σ = 12
    N, T = 4, 5
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    adv = torch.tensor([1.0, -2.0, 0.5, 3.0])
    for norm in ["seq", "token"]:
        logp = (-torch.rand(N, T) * 3).requires_grad_()
        loss, stats = grpo_loss(logp, None, logp.detach(), adv, mask, beta=0.5, norm=norm)
        loss.backward()
        for i in range(N):
            per_token = -adv[i].item() / lengths[i] / N if norm == "seq" else -adv[i].item() / 12
            expected = [per_token] * lengths[i] + [0.0] * (T - lengths[i])
            assert logp.grad[i].tolist() == pytest.approx(expected, abs=1e-6), (norm, i)
        assert stats["kl"] == 0.0 and stats["clip_fraction"] == 0.0 and stats["ratio_mean"] == 1.0
        # on-policy the objective is Â averaged by the norm: seq = (1 - 2 + .5 + 3) / 4 = .625;
        # token = (1·4 - 2·2 + .5·5 + 3·1) / 12 = 5.5 / 12
        expected_loss = -0.625 if norm == "seq" else -5.5 / 12
        assert loss.item() == pytest.approx(expected_loss, abs=1e-6)


def test_grpo_loss_empty_row_is_finite():
    # row 1 has no completion tokens: it contributes 0 (seq: 0 / max(0, 1)) and no NaN.
    # seq: (Â_0·1 + 0) / 2 = 2 / 2 = 1 -> loss -1; token: 2·2 / 2 tokens = 2 -> loss -2
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    adv = torch.tensor([2.0, -2.0])
    for norm, expected in [("seq", -1.0), ("token", -2.0)]:
        logp = torch.full((2, 2), -1.0, requires_grad=True)
        loss, _ = grpo_loss(logp, None, None, adv, mask, beta=0.0, norm=norm)
        loss.backward()
        assert torch.isfinite(loss) and loss.item() == pytest.approx(expected)
        assert torch.isfinite(logp.grad).all() and (logp.grad[1] == 0).all()
    # all rows empty: still finite
    loss, stats = grpo_loss(torch.zeros(2, 2), None, None, adv, torch.zeros(2, 2), beta=0.0)
    assert loss.item() == 0.0 and stats["clip_fraction"] == 0.0


def test_grpo_loss_bad_arguments():
    logp, old, ref, adv, mask = hand_inputs()
    with pytest.raises(ValueError, match="norm"):
        grpo_loss(logp, old, ref, adv, mask, norm="sum")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)


def test_grpo_loss_extreme_logprobs_stay_finite():
    # Pad tokens can carry wild log-probs: exp(±100) overflows float32 to inf, and inf · mask 0 = NaN,
    # so both exponents (ρ and k3) must be clamped. Token 1: log π_θ = -100 vs π_ref = 1 (k3 overflow);
    # token 2: log π_θ - log π_old = +99 with Â < 0 (ρÂ = -inf).
    logp = torch.tensor([[-1.0, -100.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.0, -100.0]])
    ref = torch.tensor([[-1.0, 0.0, -1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    assert torch.isfinite(kl_k3(logp, ref)).all()
    loss, stats = grpo_loss(logp, old, ref, torch.tensor([-1.0]), mask, beta=0.04)
    loss.backward()
    # only the real token counts: ρ = 1, k3 = 0 -> loss = -Â = 1, gradient -Â = 1 there and 0 on the pads
    assert loss.item() == pytest.approx(1.0)
    assert logp.grad[0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert all(math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("norm", ["seq", "token"])
@pytest.mark.parametrize("on_policy", [True, False])
def test_grpo_loss_minus_inf_on_a_masked_slot_is_as_if_it_were_finite(norm, on_policy):
    # A padding slot may hold log π = -inf (a token the model deems impossible). On-policy, old_logp = logp.detach()
    # gives -inf - -inf = NaN there, and NaN · mask 0 is NaN: the slot must not reach the arithmetic at all.
    base = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])  # [N, T]
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # [N, T]
    pad = mask == 0

    def run(fill):
        logp = base.masked_fill(pad, fill).requires_grad_()  # [N, T]
        old = None if on_policy else (base - 0.1).masked_fill(pad, fill)  # [N, T] off-policy: ρ ≠ 1
        ref = (base + 0.3).masked_fill(pad, fill)  # [N, T]
        loss, stats = grpo_loss(logp, old, ref, torch.tensor([1.0, -1.0]), mask, beta=0.04, norm=norm)
        loss.backward()
        return loss.detach(), logp.grad, stats

    finite, inf = run(-1.0), run(-math.inf)
    assert torch.isfinite(inf[0]) and torch.isfinite(inf[1]).all()
    assert torch.equal(inf[0], finite[0]) and torch.equal(inf[1], finite[1]) and inf[2] == finite[2]
    assert (inf[1][pad] == 0).all() and (inf[1][~pad] != 0).all()


def previous_grpo_loss(logp, old_logp, ref_logp, advantages, mask, clip_eps, beta, norm):
    """grpo_loss before the step's normaliser became an argument (a mean over the micro-batch), kept to compare."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp((logp - old_logp).clamp(-20.0, 20.0))
    A = advantages[:, None]
    M = torch.min(ratio * A, ratio.clamp(1 - clip_eps, 1 + clip_eps) * A)
    per_token = (M - beta * kl_k3(logp, ref_logp)) * mask
    if norm == "seq":
        return -(per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    return -per_token.sum() / mask.sum().clamp(min=1)


@pytest.mark.parametrize("norm", ["seq", "token"])
def test_grpo_loss_equals_the_previous_one_and_micro_batches_just_add_up(norm):
    # 3 prompts × G = 4, ragged lengths, off-policy (ρ ≠ 1, some clipped). Whole: the old mean, to float precision.
    # Cut into micro-batches of 1-3 completions with the step's normaliser passed in: the losses and the
    # gradients simply add up to the whole step's, the sum of eq. (3) that train_step relies on.
    torch.manual_seed(0)
    N, T = 12, 7
    lengths = torch.randint(1, T + 1, (N,))
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()  # [N, T]
    base = -torch.rand(N, T) * 4
    old, ref, adv = base + 0.3 * torch.randn(N, T), base + 0.3 * torch.randn(N, T), torch.randn(N)
    whole_logp = base.clone().requires_grad_()
    whole, _ = grpo_loss(whole_logp, old, ref, adv, mask, clip_eps=0.2, beta=0.04, norm=norm)
    assert whole.item() == pytest.approx(previous_grpo_loss(base, old, ref, adv, mask, 0.2, 0.04, norm).item(),
                                         rel=1e-6, abs=1e-7)
    whole.backward()
    normaliser = N if norm == "seq" else mask.sum().item()
    parts_logp, total = base.clone().requires_grad_(), 0.0
    for rows in [slice(0, 1), slice(1, 4), slice(4, 6), slice(6, 9), slice(9, 12)]:
        loss, _ = grpo_loss(parts_logp[rows], old[rows], ref[rows], adv[rows], mask[rows], norm=norm,
                            normaliser=normaliser)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(whole.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(parts_logp.grad, whole_logp.grad, rtol=1e-5, atol=1e-7)
    assert (whole_logp.grad[mask == 0] == 0).all() and (whole_logp.grad != 0).sum() > N
