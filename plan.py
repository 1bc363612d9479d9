"""
Per-GPU memory plan for GRPO training of Qwen2.5-VL under FSDP2 (no GPU and no weights needed).

    python plan.py --model qwen2.5-vl-3b --gpus 4 --group-size 8 --gpu-gb 48

The model is built on the meta device from its config, so every parameter's shape is real. Bytes are per
GPU; GiB = 2**30. What the training step is assumed to do (grpo.py / anomalyr1.py):

FSDP2: `fully_shard` per vision block, per decoder layer, then the root (token embedding = tied lm_head,
patch embed, patch merger, final norm). MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32): the
sharded master weights stay fp32, each unit is all-gathered to bf16 to compute, its bf16 gradient is cast to
fp32 and reduce-scattered into the fp32 gradient shard. A shard holds ceil(dim0 / gpus) rows of every
parameter (FSDP2 pads dim 0). grpo.py runs one process as a one-rank FSDP2 group, so `gpus=1` plans
`python grpo.py` on one GPU: the same units, all-gathers and casts, with shards the size of the whole model.

Persistent all step: fp32 parameter, gradient and AdamW (exp_avg, exp_avg_sq, a 4-byte step per tensor)
shards, and the frozen reference model's bf16 shards (none when beta == 0). On top of that the step peaks
in one of four phases; total = persistent + the largest phase:
  rollout    one generate call for the GPU's prompts × G: the whole policy unsharded in bf16 (grpo.py calls
             set_reshard_after_forward(False) around generate: measured on the tiny model, 32 new tokens took 5
             all-gathers instead of 129; with --rollout-reshard it does not), the KV cache, the no-grad prefill of
             each prompt once.
  reference  reference log-probs, no grad, `logprob_batch` completions of one prompt per forward.
  train      policy log-prob forward + backward, `logprob_batch` completions per micro-batch (backward per
             micro-batch, gradients accumulate).
  optimizer  AdamW's foreach sqrt(exp_avg_sq) temporary: one more fp32 shard.
A FSDP forward holds the root unsharded (FSDP2 does not reshard the root after forward) plus two units:
the one computing and the one prefetched. A log-prob micro-batch is one packed row, the prompt once and then
its B completions (anomalyr1.packed_logprobs): P + B·T tokens, the vision tower once. Attention there is sdpa's
memory-efficient kernel with the row's [L, L] mask (bool, plus its cast to the compute dtype), no L×L scores.
Logits exist only for completion positions (logits_to_keep). Buffers, the CUDA context, NCCL buffers and
allocator fragmentation are what the safety margin is for.
"""
import dataclasses
import itertools
import math
import os
import sys

import torch
from transformers import AutoConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
# the image processor's own resize rule (no torchvision needed): multiples of 28 px within a pixel budget
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

import cli

GiB = 2**30
BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


def qwen25_vl_3b_config():
    """Qwen2.5-VL-3B-Instruct from the numbers of its public config.json (Qwen/Qwen2.5-VL-3B-Instruct on the
    Hugging Face hub), so the planner needs no download."""
    return Qwen2_5_VLConfig(
        text_config=dict(hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                         intermediate_size=11008, vocab_size=151936, max_position_embeddings=128000, rms_norm_eps=1e-6,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, out_hidden_size=2048, intermediate_size=3420, num_heads=16,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=True)


def tiny_plan_config():
    """A small Qwen2.5-VL that builds with real weights on CPU in well under a second (tests/test_plan.py)."""
    return Qwen2_5_VLConfig(
        text_config=dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=768, vocab_size=4096, max_position_embeddings=4096, bos_token_id=4004,
                         eos_token_id=4005, pad_token_id=4004,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}),
        vision_config=dict(depth=2, hidden_size=128, out_hidden_size=256, intermediate_size=256, num_heads=4,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1]),
        image_token_id=4000, video_token_id=4001, vision_start_token_id=4002, vision_end_token_id=4003,
        tie_word_embeddings=True)


def load_config(model):
    if isinstance(model, Qwen2_5_VLConfig):
        return model
    if model == "qwen2.5-vl-3b":
        return qwen25_vl_3b_config()
    if model == "tiny-config":
        return tiny_plan_config()
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise ValueError(f"no {os.path.join(model, 'config.json')}. Pass a local Hugging Face model folder, "
                         "'qwen2.5-vl-3b' or 'tiny-config'.")
    try:
        config = AutoConfig.from_pretrained(model, local_files_only=True, trust_remote_code=False)  # no remote code
    except (OSError, ValueError) as e:  # transformers' own words name neither the file nor a fix
        raise ValueError(f"{model}/config.json: not a readable model config ({type(e).__name__}); re-download it "
                         "with the model") from None
    if config.model_type != "qwen2_5_vl":
        raise ValueError(f"{model}/config.json is model_type {config.model_type!r}; this planner knows "
                         "Qwen2.5-VL ('qwen2_5_vl') only.")
    return config


# Qwen2.5-VL-*-Instruct's image budget (preprocessor_config.json): a 1000×800 image stays 1008×812
MIN_PIXELS, MAX_PIXELS = 56 * 56, 14 * 14 * 4 * 16384


def count_units(config, gpus):
    """Parameter counts of the meta model, per FSDP unit, and the per-GPU shard size."""
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    shard = lambda p: math.ceil(p.shape[0] / gpus) * math.prod(p.shape[1:]) if p.dim() else 1
    numel = lambda module: sum(p.numel() for p in module.parameters())
    layers = [numel(m) for m in model.model.language_model.layers]
    blocks = [numel(m) for m in model.model.visual.blocks]
    total = numel(model)  # parameters() yields the tied embedding / lm_head once
    return dict(params=total, tensors=len(list(model.parameters())), shard=sum(shard(p) for p in model.parameters()),
                root=total - sum(layers) - sum(blocks), unit=max(layers + blocks))


def layer_saved(h, inter, e, attn_copies):
    """Bytes per token autograd saves inside one decoder layer / vision block, compute dtype of e bytes.
    Each RMSNorm: its fp32 upcast (kept by pow and mul; no copy when already fp32), the normalized x (kept by
    weight·x) and its output (kept by the next Linear). Attention: `attn_copies` × [h]: decoder 5 = q after RoPE,
    k and v repeated to all heads (a padding mask forces repeat_kv), sdpa output, o_proj input; vision 7 = the
    fused qkv output (v is a view of it) instead of k and v, q and k after RoPE, sdpa output, the concat.
    MLP: gate (kept by silu), silu(gate) and up (kept by the product), the product (kept by down_proj)."""
    norm = (4 * h if e < 4 else 0) + 2 * e * h
    return 2 * norm + attn_copies * e * h + 4 * e * inter


def backward_transient(h, inter, e):
    """Gradients alive during one layer's backward beside what it saved: d(gate), d(up), d(product) [I]
    and the residual stream's incoming and outgoing gradient [h]."""
    return e * (3 * inter + 2 * h)


def nograd_transient(h, inter, e):
    """Bytes per token alive in a no-grad forward of one layer: silu(gate), up and their product [I] at once,
    the residual stream in and out and the normed input [h], the fp32 RMSNorm upcast."""
    return e * (3 * inter + 3 * h) + 4 * h


def train_activations(config, tokens, vtokens, e, grad_checkpointing):
    """(bytes autograd keeps for backward, bytes of the largest layer's backward working set) of one policy
    log-prob forward over `tokens` LLM tokens and `vtokens` vision-tower patches."""
    tc, vc = config.text_config, config.vision_config
    h, I, L, hv, Iv, Lv = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers, vc.hidden_size, \
        vc.intermediate_size, vc.depth
    # not checkpointed: the final norm; per patch the fp32 pixel_values, the conv's input in the compute dtype,
    # the merger's RMSNorm, and its Linear / GELU / Linear inputs (4·hv per 4 patches each)
    pixel = vc.in_channels * vc.temporal_patch_size * vc.patch_size**2  # 1176 values per patch
    edges = tokens * layer_saved(h, 0, e, 0) / 2 + vtokens * ((4 + e) * pixel + layer_saved(hv, 0, e, 0) / 2 + 3 * e * hv)
    if grad_checkpointing:  # saved: each layer's input; recomputed: one layer's whole graph
        saved = tokens * L * e * h + vtokens * Lv * e * hv + edges
        work = max(tokens * (layer_saved(h, I, e, 5) + backward_transient(h, I, e)),
                   vtokens * (layer_saved(hv, Iv, e, 7) + backward_transient(hv, Iv, e)))
    else:
        saved = tokens * L * layer_saved(h, I, e, 5) + vtokens * Lv * layer_saved(hv, Iv, e, 7) + edges
        work = max(tokens * backward_transient(h, I, e), vtokens * backward_transient(hv, Iv, e))
    return saved, work


def estimate(c, config, gpus, group_size, logprob_batch, prompts_per_step, max_completion, image_size, shots,
             text_tokens, beta, dtype, grad_checkpointing, rollout_reshard, gpu_gb, margin_gb):
    """Pure arithmetic on the unit counts `c`: returns the table rows and the verdict."""
    tc, vc, e = config.text_config, config.vision_config, BYTES[dtype]
    h, L, I, V = tc.hidden_size, tc.num_hidden_layers, tc.intermediate_size, tc.vocab_size
    hv, Iv, Lv = vc.hidden_size, vc.intermediate_size, vc.depth
    head_dim = getattr(tc, "head_dim", None) or h // tc.num_attention_heads
    G, B, T = group_size, logprob_batch or group_size, max_completion
    # prompt: each image is resized to multiples of 28 px; one LLM token per 2×2 merged 14-px patches
    height, width = smart_resize(image_size[1], image_size[0], vc.patch_size * vc.spatial_merge_size,
                                 min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    patches = (height // vc.patch_size) * (width // vc.patch_size)  # vision-tower tokens per image
    image_tokens = patches // vc.spatial_merge_size**2  # LLM tokens per image
    images = 1 + shots  # the query image + normal template images
    P = images * image_tokens + text_tokens
    S = P + T
    prompts = math.ceil((prompts_per_step or gpus) / gpus)  # this GPU's prompts, rolled out in one generate call
    gather = e * (c["root"] + 2 * c["unit"])  # unsharded root + the computing and the prefetched unit
    rows = [("persistent (all step)", None, ""),
            ("parameters", 4 * c["shard"], "fp32 master shards (bf16 compute via MixedPrecisionPolicy)"),
            ("gradients", 4 * c["shard"], "fp32 shards (each unit reduce-scattered in fp32)"),
            ("AdamW state", 8 * c["shard"] + 4 * c["tensors"], "exp_avg + exp_avg_sq fp32 shards, 4-B step each"),
            ("reference model", e * c["shard"] if beta > 0 else 0,
             f"{dtype} shards, frozen" if beta > 0 else "none: beta = 0")]
    phases = {}
    # rollout: each prompt is prefilled once, images included, then its KV cache copied G times (anomalyr1.generate)
    seqs = prompts * G
    kv = 2 * L * tc.num_key_value_heads * head_dim * S * seqs * e
    prefill = max(prompts * P * nograd_transient(h, I, e), prompts * images * patches * nograd_transient(hv, Iv, e))
    phases["rollout"] = [("policy for generate", gather if rollout_reshard else e * c["params"],
                          "root + 2 units all-gathered" if rollout_reshard else f"unsharded {dtype} across generate"),
                         ("KV cache", kv, f"2·{L} layers·{tc.num_key_value_heads} kv·{head_dim}·{S} tok·{seqs} seq·{e} B"),
                         ("prefill working set", prefill, "no grad, one layer or vision block at a time")]
    # log-prob forwards: one packed row [prompt | B completions]; the vision tower runs once for the prompt
    tokens, vtokens = P + B * T, images * patches
    mask_row = ("packed attention mask", (1 + e) * tokens**2, f"[{tokens},{tokens}] bool + {dtype}")
    logit_elems = B * T * V
    if beta > 0:
        ref_work = max(tokens * nograd_transient(h, I, e), vtokens * nograd_transient(hv, Iv, e))
        phases["reference"] = [("reference all-gather", gather, "root + 2 units"),
                               ("no-grad working set", ref_work, f"{P} + {B}×{T} tok, one layer at a time"),
                               mask_row,
                               ("completion logits", e * logit_elems + 4 * T * V, f"{dtype} [B,T,V] + one fp32 row")]
    saved, work = train_activations(config, tokens, vtokens, e, grad_checkpointing)
    # anomalyr1.packed_logprobs: lm_head gives [B,T,V] in bf16; each row's fp32 copy is kept by logsumexp for
    # backward. Logits are freed by their own backward, before any layer is recomputed: max(), not sum.
    logits = (e + 4) * logit_elems
    phases["train"] = [("policy all-gather", gather, "root + 2 units"),
                       ("gradient reduce-scatter", (e + 4) * (c["root"] + c["unit"]),
                        f"root's unsharded grad (lm_head is first in backward, reduced last) + 1 unit, {dtype} + fp32"),
                       mask_row,
                       ("activations: saved", saved, f"{P} + {B}×{T} tok" + (
                           f": {L} decoder + {Lv} vision layer inputs" if grad_checkpointing else ", no checkpointing")),
                       ("activations: recompute", work, "one layer's graph + its gradients (max decoder / vision)"),
                       ("completion logits", logits, f"[{B},{T},{V}] {dtype} + fp32 copy kept for backward")]
    phases["optimizer"] = [("AdamW foreach temporary", 4 * c["shard"], "sqrt(exp_avg_sq), one fp32 shard")]
    persistent = sum(b for _, b, _ in rows[1:])
    peaks = {}
    for name, items in phases.items():
        # the train phase's logits and recompute never coexist; everything else in a phase does
        peaks[name] = sum(b for _, b, _ in items) - (min(work, logits) if name == "train" else 0)
        rows += [(f"phase {name}" + ("  (logits | recompute: larger only)" if name == "train" else ""), None, "")]
        rows += items + [(f"  = {name} peak", peaks[name], "")]
    worst = max(peaks, key=peaks.get)
    total = persistent + peaks[worst]
    budget = (gpu_gb - margin_gb) * GiB
    return dict(rows=rows, total=total, persistent=persistent, peak_phase=worst, phases=peaks, budget=budget,
                fits=total <= budget, n_params=c["params"], shard=c["shard"], prompt_tokens=P,
                tokens_per_image=image_tokens, resized=(width, height), seq_len=S, kv_cache=kv,
                params=4 * c["shard"], grads=4 * c["shard"], adam=8 * c["shard"] + 4 * c["tensors"])


@dataclasses.dataclass
class Config:
    """The planned setting; every field is a flag of python plan.py, named as grpo.py's flag for the same thing."""
    model: str = cli.option("qwen2.5-vl-3b", "qwen2.5-vl-3b | tiny-config | a local Hugging Face folder")
    gpus: int = cli.option(4, "GPUs the model is sharded over (FSDP2)")
    group_size: int = cli.option(8, "G, completions sampled per prompt")
    logprob_batch: int | None = cli.option(None, "completions per log-prob forward; default G")
    prompts_per_step: int | None = cli.option(None, "prompts per step, all GPUs together; default one per GPU")
    max_completion: int = cli.option(256, "completion tokens")
    image_size: tuple[int, int] = cli.option((1000, 800), "width and height of each image before Qwen's resize",
                                             metavar=("W", "H"))
    shots: int = cli.option(1, "normal template images per prompt, besides the query image")
    text_tokens: int = cli.option(200, "prompt tokens besides the images'")
    beta: float = cli.option(0.04, "KL weight; 0 drops the reference model")
    dtype: str = cli.option("bf16", "compute dtype", choices=sorted(BYTES))
    grad_checkpointing: bool = cli.option(True, "recompute each layer's activations in backward")
    rollout_reshard: bool = cli.option(False, "reshard the policy during generate (slower, saves the unsharded "
                                              "bf16 copy)")
    gpu_gb: float = cli.option(48.0, "memory per GPU, GiB")
    margin_gb: float = cli.option(8.0, "allowance for the CUDA context, NCCL buffers, fragmentation, GiB")


def check(cfg: Config):
    """Counts and sizes a planner cannot plan (a ZeroDivisionError, or a negative number of bytes planned as fine):
    one line naming the flag, the same flag in plan.py and grpo.py --plan."""
    least = {"gpus": 1, "group_size": 1, "logprob_batch": 1, "prompts_per_step": 1, "max_completion": 1,
             "shots": 0, "text_tokens": 0, "beta": 0, "gpu_gb": 1e-9, "margin_gb": 0}
    for name, low in least.items():
        value = getattr(cfg, name)
        if value is not None and not value >= low:  # `not >=`: NaN is refused too
            need = "a positive" if low > 0 else "a non-negative"
            raise ValueError(f"--{name.replace('_', '-')} {value}: pass {need} number")
    if cfg.logprob_batch is not None and cfg.logprob_batch > cfg.group_size:
        raise ValueError(f"--logprob-batch {cfg.logprob_batch}: at most --group-size {cfg.group_size} (a log-prob "
                         "forward packs one prompt's completions)")
    if not all(side >= 1 for side in cfg.image_size):
        raise ValueError(f"--image-size {' '.join(map(str, cfg.image_size))}: pass a positive width and height")
    if cfg.prompts_per_step is not None and cfg.prompts_per_step % cfg.gpus:  # grpo.py refuses it too
        raise ValueError(f"--prompts-per-step {cfg.prompts_per_step}: must be a multiple of --gpus {cfg.gpus} (each "
                         "GPU takes the same share of the prompts)")
    if cfg.margin_gb >= cfg.gpu_gb:  # the budget left for the run would be nothing or negative
        raise ValueError(f"--margin-gb {cfg.margin_gb:g}: must be less than --gpu-gb {cfg.gpu_gb:g}")


def plan(model="qwen2.5-vl-3b", suggest=True, **settings):
    """Per-GPU bytes of one GRPO step (see the module docstring). `model`: 'qwen2.5-vl-3b', 'tiny-config', a
    local HF folder or a Qwen2_5_VLConfig; `settings`: Config's fields by name, the rest at Config's defaults.
    If the total is over gpu_gb - margin_gb and `suggest`, result["suggestion"] is the first setting that fits."""
    cfg = Config(**settings)  # a misspelt setting is a TypeError here
    check(cfg)
    settings = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(Config) if f.name != "model"}
    settings.update(logprob_batch=cfg.logprob_batch or cfg.group_size, image_size=tuple(cfg.image_size))
    config = load_config(model)
    counts = count_units(config, cfg.gpus)
    result = estimate(counts, config, **settings)
    result.update(settings=settings, model=model if isinstance(model, str) else "config", suggestion=None)
    if suggest and not result["fits"]:
        # standard knobs, least intrusive first (the last varies fastest): smaller log-prob micro-batches (slower,
        # same algorithm), reshard during rollout (slower), fewer template images (changes the prompt), beta = 0
        # (drops the KL term and the reference model)
        batches = sorted({max(1, cfg.group_size >> k) for k in range(8)}, reverse=True)
        knobs = itertools.product((cfg.beta, 0.0) if cfg.beta > 0 else (cfg.beta,), range(cfg.shots, -1, -1),
                                  (False, True) if not cfg.rollout_reshard else (True,), batches)
        for beta, shots, reshard, batch in knobs:
            trial = dict(settings, logprob_batch=batch, shots=shots, beta=beta, rollout_reshard=reshard)
            r = estimate(counts, config, **trial)
            if r["fits"]:
                changed = {k: v for k, v in trial.items() if v != settings[k]}
                result["suggestion"] = dict(changed=changed, total=r["total"])
                break
    return result


def flag(name, value):
    """The command-line spelling of one changed setting, valid for plan.py and grpo.py alike."""
    dashed = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return dashed if value else "--no-" + dashed[2:]
    return f"{dashed} {value:g}" if isinstance(value, float) else f"{dashed} {value}"


def format_table(r):
    s = r["settings"]
    lines = [f"GRPO memory plan: {r['model']}, {r['n_params'] / 1e9:.3f} B params, {s['gpus']} GPU(s) FSDP2, "
             f"{s['dtype']} compute, fp32 master weights",
             f"G={s['group_size']}, logprob_batch={s['logprob_batch']}, beta={s['beta']}, {s['max_completion']} completion "
             f"tokens, {1 + s['shots']} image(s) {s['image_size'][0]}x{s['image_size'][1]} -> {r['resized'][0]}x"
             f"{r['resized'][1]} = {r['tokens_per_image']} tokens each, + {s['text_tokens']} text = prompt "
             f"{r['prompt_tokens']}, sequence {r['seq_len']}",
             f"{'':28s}{'GiB/GPU':>8s}"]
    for name, b, note in r["rows"]:
        lines.append(f"{name}" if b is None else f"  {name:26s}{b / GiB:8.2f}  {note}")
    lines.append(f"total = persistent {r['persistent'] / GiB:.2f} + {r['peak_phase']} peak "
                 f"{r['phases'][r['peak_phase']] / GiB:.2f} = {r['total'] / GiB:.2f} GiB per GPU")
    lines.append(f"budget = {s['gpu_gb']:g} GiB - {s['margin_gb']:g} GiB margin (CUDA context ~0.5, NCCL buffers, "
                 f"allocator fragmentation) = {r['budget'] / GiB:.2f} GiB -> {'FITS' if r['fits'] else 'DOES NOT FIT'}")
    if not r["fits"]:
        sug = r["suggestion"]
        lines.append("no setting tried fits: use more GPUs or a smaller model" if sug is None else
                     "fits with " + " ".join(flag(k, v) for k, v in sug["changed"].items())
                     + f": {sug['total'] / GiB:.2f} GiB")
    return "\n".join(lines)


def materialize(model, out, seed=0):
    """Write a random-weight Qwen2.5-VL shaped like `model` to the folder `out`, which grpo.py and anomalyr1.load
    take like any downloaded checkpoint: to measure memory and speed on a GPU beside this plan, with nothing to
    download (a text-only or smaller stand-in would not exercise the real shapes).

    Weights: bf16 safetensors, transformers' own initialisation. Tokenizer and chat template: the tiny model's,
    with the config's special-token ids pointed at that tokenizer's. Image processor: Qwen2.5-VL-Instruct's
    pixel budget (3136 to 12845056 pixels; a 1000×800 image is 1044 tokens, as planned). The random model writes
    garbage (rewards 0) and almost never ends its turn, so every completion runs to the length limit: the worst
    case for memory and time.
    """
    import anomalyr1
    from tiny import build_tiny
    if os.path.exists(out):  # checked before minutes of work, not by save_pretrained after them
        raise ValueError(f"--materialize {out}: already exists; pass a new folder for the random model")
    config = load_config(model)
    tiny = build_tiny()
    ids = AutoConfig.from_pretrained(tiny)
    for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        setattr(config, name, getattr(ids, name))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config.text_config, name, getattr(ids.text_config, name))
    processor = anomalyr1.image_only_processor_class().from_pretrained(tiny)
    processor.image_processor.size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    torch.manual_seed(seed)
    random_model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    random_model.save_pretrained(out)  # safetensors
    processor.save_pretrained(out)
    return out


def for_run(cfg):
    """The plan's table for a grpo.py Config (python grpo.py --plan)."""
    from tiny import build_tiny
    model = build_tiny() if cfg.model == "tiny" else cfg.model
    return format_table(plan(model, gpus=cfg.gpus, group_size=cfg.group_size, logprob_batch=cfg.logprob_batch,
                             prompts_per_step=cfg.prompts_per_step, max_completion=cfg.max_completion, shots=cfg.shots,
                             beta=cfg.beta, dtype=cfg.dtype, grad_checkpointing=cfg.grad_checkpointing,
                             rollout_reshard=cfg.rollout_reshard, gpu_gb=cfg.gpu_gb))


def main(argv=None):
    p = cli.parser(__doc__.split("\n")[1], prog="plan.py")
    cli.add_flags(p, Config)
    p.add_argument("--materialize", metavar="OUT", type=cli.non_empty,
                   help="instead of planning, write a random-weight model of this "
                   "shape to OUT for a GPU run: python grpo.py --model OUT --steps 3 (metrics: peak_memory_gib)")
    given = cli.given(p, argv)
    out = given.pop("materialize", None)
    cfg = Config(**given)
    with cli.user_errors("plan.py"):
        print(materialize(cfg.model, out) if out else format_table(plan(**dataclasses.asdict(cfg))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
