"""plan.py checked against memory measured on CPU for a small Qwen2.5-VL with real weights.

Parameter, gradient, AdamW and KV-cache bytes are deterministic counts: they must match exactly. The per-layer
activation formula is checked against the bytes autograd actually saves (saved_tensors_hooks), which is
deterministic too, unlike a CPU peak-memory reading.
"""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import plan as P  # noqa: E402

SMALL = dict(model="tiny-config", gpus=1, group_size=2, max_completion=8, image_size=(112, 84), shots=1,
             text_tokens=20, beta=0.04, dtype="fp32")


@pytest.fixture(scope="module")
def small():
    """The tiny-config model with real fp32 weights, its plan, and a batch shaped exactly as the plan assumes."""
    torch.manual_seed(0)
    config = P.tiny_plan_config()
    model = P.Qwen2_5_VLForConditionalGeneration(config).float()
    r = P.plan(**SMALL)
    vc, G, images = config.vision_config, SMALL["group_size"], 1 + SMALL["shots"]
    grid = [1, r["resized"][1] // vc.patch_size, r["resized"][0] // vc.patch_size]  # [t, h, w] patches
    image = [config.vision_start_token_id] + [config.image_token_id] * r["tokens_per_image"] + [config.vision_end_token_id]
    n_text = r["seq_len"] - images * len(image)  # the plan counts vision start/end among its text tokens
    ids = torch.randint(0, 3000, (G, n_text))
    input_ids = torch.cat([ids[:, :5], *[torch.tensor(image).expand(G, -1)] * images, ids[:, 5:]], 1)  # [G, S]
    batch = dict(input_ids=input_ids, mm_token_type_ids=(input_ids == config.image_token_id).int(),
                 pixel_values=torch.randn(G * images * grid[0] * grid[1] * grid[2], 3 * 2 * 14 * 14),
                 image_grid_thw=torch.tensor([grid] * (G * images)))
    return model, r, batch


@pytest.mark.parametrize("size", [(1000, 800), (777, 333), (40, 30), (4200, 3100)])  # as is, up to min, down to max
def test_image_tokens_are_what_qwens_processor_makes(size):
    """The plan's tokens per image come from the processor's own resize rule within Qwen2.5-VL-Instruct's pixel
    budget (3136 to 12845056): the real processor, given such an image, makes that many tokens."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from PIL import Image
    processor = Qwen2VLImageProcessorPil(min_pixels=P.MIN_PIXELS, max_pixels=P.MAX_PIXELS)
    grid = processor(images=[Image.new("RGB", size, (90, 90, 90))], return_tensors="pt")["image_grid_thw"][0]
    r = P.plan("tiny-config", gpus=1, image_size=size)
    assert r["tokens_per_image"] == int(grid.prod()) // 4 and r["resized"] == (grid[2] * 14, grid[1] * 14)


def test_params_grads_adam_match_measured_bytes(small):
    model, r, batch = small
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert r["params"] == param_bytes
    model.train()
    loss = model(**batch, use_cache=False).logits.float().square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters()), "every parameter must be trained"
    assert r["grads"] == sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert r["adam"] == sum(t.numel() * t.element_size() for t in state)
    model.zero_grad(set_to_none=True)


def test_fsdp_shard_is_rank0_chunk(small):
    model, _, _ = small  # FSDP2 splits dim 0 like torch.chunk; rank 0 holds the largest chunk
    rank0 = sum(torch.chunk(p, 3, dim=0)[0].numel() for p in model.parameters())  # 3: dims don't divide evenly
    assert P.plan(**dict(SMALL, gpus=3))["params"] == 4 * rank0


def test_kv_cache_matches_dynamic_cache(small):
    model, r, batch = small
    model.eval()
    with torch.no_grad():  # one forward over the whole prompt + completion length fills the cache for all of it
        cache = model(**batch, use_cache=True).past_key_values  # also fails if the image token count were wrong
    measured = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert r["kv_cache"] == measured


def saved_bytes_per_token(fn, tokens, exclude):
    """Bytes autograd saves for backward while fn() runs, each storage once, weights and inputs excluded."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values()) / tokens


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_layer_saved_matches_autograd(small, dtype):
    model, _, _ = small
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = model.to(torch_dtype)
    try:
        tc, vc, weights = model.config.text_config, model.config.vision_config, list(model.parameters())
        B, S = 2, 64  # decoder layer; a padding mask makes sdpa repeat k and v to all heads, as in training
        x = torch.randn(B, S, tc.hidden_size, dtype=torch_dtype, requires_grad=True)
        cos_sin = model.model.language_model.rotary_emb(x, torch.arange(S).expand(3, B, S))
        mask = torch.ones(B, 1, S, S, dtype=torch.bool).tril()
        layer = model.model.language_model.layers[0]
        measured = saved_bytes_per_token(lambda: layer(x, attention_mask=mask, position_embeddings=cos_sin),
                                         B * S, weights + [x, *cos_sin])
        planned = P.layer_saved(tc.hidden_size, tc.intermediate_size, P.BYTES[dtype], 5)
        assert planned == pytest.approx(measured, rel=0.15)
        N = 256  # vision block over 4 windows of 64 patches
        xv = torch.randn(N, vc.hidden_size, dtype=torch_dtype, requires_grad=True)
        cs = (torch.randn(N, 32), torch.randn(N, 32))
        cu = torch.tensor([0, 64, 128, 192, 256], dtype=torch.int32)
        block = model.model.visual.blocks[0]
        measured = saved_bytes_per_token(lambda: block(xv, cu_seqlens=cu, position_embeddings=cs), N,
                                         weights + [xv, *cs])
        planned = P.layer_saved(vc.hidden_size, vc.intermediate_size, P.BYTES[dtype], 7)
        assert planned == pytest.approx(measured, rel=0.15)
    finally:
        model.float()


def test_3b_counts_and_fits_4_gpus():
    r = P.plan("qwen2.5-vl-3b", gpus=4, group_size=8)
    assert r["n_params"] == pytest.approx(3.75e9, rel=0.02)
    assert r["tokens_per_image"] == 36 * 29 and r["prompt_tokens"] == 2 * 1044 + 200  # 1000×800 -> 1008×812
    assert r["kv_cache"] == 2 * 36 * 2 * 128 * (2288 + 256) * 8 * 2
    assert r["params"] == pytest.approx(4 * 3.755e9 / 4, rel=0.01)  # fp32 master shard
    assert r["fits"] and r["total"] <= 40 * P.GiB
    assert "FITS" in P.format_table(r)


@pytest.mark.parametrize("kw", [dict(gpus=2, gpu_gb=44), dict(gpus=4, shots=24), dict(gpus=4, gpu_gb=30)])
def test_suggestion_is_a_setting_that_fits(kw):
    r = P.plan("qwen2.5-vl-3b", **kw)
    assert not r["fits"] and r["suggestion"] is not None
    budget = r["budget"]
    assert r["suggestion"]["total"] <= budget <= 40 * P.GiB
    changed = dict(r["suggestion"]["changed"])
    again = P.plan("qwen2.5-vl-3b", **dict(kw, **changed))  # the suggestion, taken, really fits
    assert again["fits"] and again["total"] == r["suggestion"]["total"]
    assert "fits with --" in P.format_table(r)


def test_beta_zero_drops_reference_and_bad_path_is_clear(tmp_path):
    with_ref, without = P.plan("tiny-config", beta=0.04), P.plan("tiny-config", beta=0.0)
    assert "reference" in with_ref["phases"] and "reference" not in without["phases"]
    assert without["persistent"] < with_ref["persistent"]
    with pytest.raises(ValueError, match="config.json"):
        P.plan(str(tmp_path / "missing"))


def test_suggested_flags_are_grpo_flags():
    """grpo.py --plan prints the suggestion as flags: every setting the plan shares with grpo.py has grpo.py's
    name, so its flag is spelt the same in both scripts."""
    import dataclasses
    import grpo
    shared = {f.name for f in dataclasses.fields(P.Config)} - {"image_size", "text_tokens", "dtype", "margin_gb"}
    assert shared <= {f.name for f in dataclasses.fields(grpo.Config)}  # the four above are the plan's own
    assert P.flag("shots", 0) == "--shots 0"
    assert P.flag("logprob_batch", 4) == "--logprob-batch 4"
    assert P.flag("rollout_reshard", True) == "--rollout-reshard"
    assert P.flag("beta", 0.0) == "--beta 0"


def test_cli_prints_the_plan_and_errors_in_one_line(tmp_path, capsys):
    assert P.main(["--gpus", "2", "--gpu-gb", "44", "--image-size", "1000", "800"]) == 0
    assert "fits with --beta 0" in capsys.readouterr().out
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")  # was transformers' words, naming no fix
    for argv, culprit in ((["--model", str(tmp_path)], "config.json"), (["--image-size", "1000"], "--image-size"),
                          (["--shots", "x"], "--shots"), (["--model", str(tmp_path / "broken")], "broken/config.json"),
                          (["--model", "tiny-config", "--materialize", str(tmp_path)], "--materialize")):
        with pytest.raises(SystemExit) as e:  # --materialize: was 2 lines ([Errno 17] File exists), after the build
            P.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("plan.py: error: ") and err.count("\n") == 1, argv
        assert culprit in err, (culprit, err)


def test_readme_quotes_the_plan_as_printed(capsys):
    """The README's 4-GPU plan is this command's output, line for line (it went stale once: 5.02 for 6.61)."""
    import grpo
    command = "python grpo.py --plan --model qwen2.5-vl-3b --gpus 4 --group-size 8"
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")) as f:
        readme = f.read()
    quoted = readme.split(f"$ {command}\n", 1)[1].split("```", 1)[0]
    assert grpo.main(command.split()[2:]) == 0
    assert capsys.readouterr().out == quoted


def test_materialized_model_trains_and_its_images_cost_what_the_plan_says(tiny, synthetic, tmp_path):
    """plan.py --materialize writes the random-weight model a GPU session measures the plan with: grpo.py must
    train it as it is, and its processor must turn a 1000×800 image into the tokens the plan counts."""
    import anomalyr1
    import grpo
    from PIL import Image
    folder = P.materialize("tiny-config", str(tmp_path / "random"))
    model, processor = anomalyr1.load(folder, device="cpu")
    Image.new("RGB", (1000, 800), (90, 90, 90)).save(tmp_path / "big.png")
    grid = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[anomalyr1.load_image(
        str(tmp_path / "big.png"))], return_tensors="pt")["image_grid_thw"][0]
    assert int(grid.prod()) // 4 == P.plan("tiny-config", image_size=(1000, 800))["tokens_per_image"] == 36 * 29
    assert model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    rows = grpo.train(grpo.Config(model=folder, steps=1, prompts_per_step=1, group_size=2, max_completion=4,
                                  out=str(tmp_path / "run")))
    assert rows[0]["completion_length"] == 4  # random weights never end their turn: the worst case, as planned
    assert rows[0]["peak_memory_gib"] > 0
