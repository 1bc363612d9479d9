"""gpucheck.py — the memory planner against one GPU, with nothing to download.

    python gpucheck.py                     # one GPU (80 GB), a few minutes

The users' run is `torchrun --nproc_per_node=4 grpo.py --model Qwen2.5-VL-3B-Instruct` on 4×48 GB. One GPU cannot
hold that run, but it can hold what one of its four ranks holds. So this builds a random-weight Qwen2.5-VL with the
3B's widths, cut in depth until its whole state on one GPU (fp32 weights, gradients and AdamW, the bf16 reference)
is the size of a 4-GPU shard of the 3B's (plan.py's materialize), resizes the synthetic set's images to the paper's
1000×800, and trains `--steps` GRPO steps through grpo.train, one rank, at the paper's per-GPU load: 2 prompts ×
G = 8, one template image + the query image, 256 new tokens (the random model never ends its turn: every
completion runs to the limit, the worst case). It prints the planner's prediction for that model and load on one GPU (what
`python grpo.py --plan --gpus 1` computes) beside the measured peak (CUDA memory allocated, largest step), the
completion tokens/s, and whether flash-attn ran the vision tower; it exits 1 when the measured peak exceeds the
plan by more than --tolerance.

On CPU (tests/test_gpucheck.py) `--model tiny-config` runs the same command end to end on a small config; the
comparison is skipped there, since a CPU process's resident set size is not CUDA memory. Any other model is refused
without a CUDA GPU: the 3B's cut alone is ~1.8 GB on disk and trains for many minutes in ~13 GB of RAM on CPU.
"""
import copy
import dataclasses
import importlib.util
import os
import shutil
import sys

import torch

import cli
import plan
import synth
from cli import option


@dataclasses.dataclass
class Check:
    model: str = option("qwen2.5-vl-3b", "the shape to check: 'qwen2.5-vl-3b', 'tiny-config' or a local Qwen2.5-VL "
                                         "folder (its config.json)")
    shard_of: int = option(4, "cut the depth until the model's full state on one GPU is one shard over this many GPUs")
    steps: int = option(3, "GRPO steps to measure")
    prompts: int = option(2, "prompts per step on this GPU (the paper: 8 per step over 4 GPUs)")
    group_size: int = option(8, "G, completions per prompt")
    max_completion: int = option(256, "new tokens per completion")
    shots: int = option(1, "normal template images before the query image")
    image_size: str = option("1000x800", "WxH the data's images are resized to (the paper's cap)")
    tolerance: float = option(0.10, "exit 1 when the measured peak exceeds the plan by more than this fraction")
    out: str = option(os.path.join("runs", "gpu-check"), "folder for the random model, the resized data and the run")


def cut_depth(config, shard_of):
    """A copy of `config` with its decoder layers and vision blocks cut by the same fraction, so that its parameter
    count (the whole model, on one GPU) is closest to one FSDP2 shard of `config` over `shard_of` GPUs."""
    from transformers import Qwen2_5_VLForConditionalGeneration
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    numel = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    L, D = config.text_config.num_hidden_layers, config.vision_config.depth
    layer, block = numel(model.model.language_model.layers[0]), numel(model.model.visual.blocks[0])
    root = numel(model) - L * layer - D * block  # embeddings (= tied lm_head), patch embed and merger, norms
    target = plan.count_units(config, shard_of)["shard"]
    f = max(0.0, (target - root) / (L * layer + D * block))  # the share of the layers the shard leaves room for
    layers, depth = max(1, round(f * L)), max(1, round(f * D))
    cut = copy.deepcopy(config)
    cut.text_config.num_hidden_layers = layers
    if getattr(cut.text_config, "layer_types", None):
        cut.text_config.layer_types = cut.text_config.layer_types[:layers]
    cut.vision_config.depth = depth
    # keep the full-attention blocks that remain (at least one: the window-attention pattern ends with one)
    cut.vision_config.fullatt_block_indexes = [i for i in config.vision_config.fullatt_block_indexes if i < depth] \
        or [depth - 1]
    return cut, target


def resized_data(out, size):
    """The synthetic MMAD-schema set with every image resized to `size` (W, H); masks copied as they are (boxes
    are not used: grpo.py skips grounding questions without the iou reward). Returns the questions json."""
    from PIL import Image
    root, questions = synth.ensure_synthetic()
    dest = os.path.join(out, f"data-{size[0]}x{size[1]}")
    if not os.path.isfile(os.path.join(dest, "questions.json")):
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for folder, _, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            os.makedirs(os.path.join(tmp, rel), exist_ok=True)
            for name in files:
                src, dst = os.path.join(folder, name), os.path.join(tmp, rel, name)
                if name.endswith(".png") and "ground_truth" not in rel.split(os.sep):
                    with Image.open(src) as im:
                        im.convert("RGB").resize(size, Image.BICUBIC).save(dst, compress_level=1)
                else:
                    shutil.copyfile(src, dst)
        shutil.copyfile(questions, os.path.join(tmp, "questions.json"))
        os.replace(tmp, dest)
    return os.path.join(dest, "questions.json")


def text_tokens(cfg, model_dir):
    """Prompt tokens that are not image tokens, in a real prompt of this run (the plan counts images apart)."""
    import anomalyr1
    import grpo
    processor = anomalyr1.image_only_processor_class().from_pretrained(model_dir)
    sample = grpo.load_data(cfg)[0][0]
    ids = anomalyr1.prepare(processor, [sample], shots=cfg.shots, templates=cfg.templates)["input_ids"]  # [1, P]
    return int((ids != anomalyr1.special_id(processor, "<|image_pad|>")).sum())


def run_config(c, model_dir="tiny", data=None):
    """grpo.py's settings for this check (memory and speed only), refused by grpo.resolve when a flag is out of
    range. The message names this script's --prompts, not grpo.py's --prompts-per-step: the flag the user typed.
    Before the random model is written (model_dir "tiny"), the same flags are checked against the same ranges."""
    import grpo
    try:
        return grpo.resolve(grpo.Config(model=model_dir, data=data, steps=c.steps, save_every=c.steps,
                                        prompts_per_step=c.prompts, group_size=c.group_size, shots=c.shots,
                                        max_completion=c.max_completion, out=os.path.join(c.out, "run"),
                                        eval_every=0, log_samples=0))
    except ValueError as e:
        raise ValueError(str(e).replace("--prompts-per-step", "--prompts")) from None


def image_size(text):
    """--image-size '1000x800' -> (1000, 800)."""
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
        raise ValueError(f"--image-size {text}: give WxH in pixels, e.g. 1000x800")
    return int(w), int(h)


def check(c):
    """Build, train, compare. Returns the exit status: 1 when the measured peak is over the plan."""
    import grpo
    size = image_size(c.image_size)
    cut, target = cut_depth(plan.load_config(c.model), c.shard_of)
    name = os.path.basename(os.path.normpath(c.model))
    model_dir = os.path.join(c.out, f"model-{name}-shard-of-{c.shard_of}")  # random weights: built once, reused
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        plan.materialize(cut, model_dir)
    cfg = run_config(c, model_dir, resized_data(c.out, size))
    run_dir = cfg.out
    shutil.rmtree(run_dir, ignore_errors=True)  # this command's own scratch run, from an earlier check
    on_cuda = torch.cuda.is_available()
    flash = on_cuda and importlib.util.find_spec("flash_attn") is not None  # anomalyr1.load's rule
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / plan.GiB if on_cuda else 80.0
    p = plan.plan(cut, gpus=1, group_size=cfg.group_size, prompts_per_step=cfg.prompts_per_step,
                  max_completion=cfg.max_completion, image_size=size, shots=cfg.shots,
                  text_tokens=text_tokens(cfg, model_dir), beta=cfg.beta, dtype=cfg.dtype,
                  grad_checkpointing=cfg.grad_checkpointing, rollout_reshard=cfg.rollout_reshard, gpu_gb=gpu_gb,
                  suggest=False)
    rows = grpo.train(cfg)
    for name in os.listdir(run_dir):  # the weights and optimizer written at the end: not needed, large
        if name != "metrics.jsonl":
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    measured = max(r["peak_memory_gib"] for r in rows)
    tokens_per_s = sorted(r["tokens_per_s"] for r in rows[1:] or rows)[len(rows[1:] or rows) // 2]
    tc, vc = cut.text_config, cut.vision_config
    print(f"gpu check: {c.model} cut to {tc.num_hidden_layers} decoder layers / {vc.depth} vision blocks = "
          f"{p['n_params'] / 1e9:.3f} B params on one {'GPU' if on_cuda else 'CPU'} (one {c.shard_of}-GPU shard of "
          f"{c.model}: {target / 1e9:.3f} B)")
    print(f"load: {cfg.prompts_per_step} prompts x G={cfg.group_size}, {1 + cfg.shots} image(s) {size[0]}x{size[1]} "
          f"({p['tokens_per_image']} tokens each), prompt {p['prompt_tokens']} tokens, {cfg.max_completion} new "
          f"tokens, {cfg.dtype}, {c.steps} steps; flash-attn in the vision tower: {'yes' if flash else 'no'}")
    print(f"plan (one-rank FSDP2, as python grpo.py --plan --gpus 1): {p['total'] / plan.GiB:.2f} GiB = persistent "
          f"{p['persistent'] / plan.GiB:.2f} + {p['peak_phase']} peak {p['phases'][p['peak_phase']] / plan.GiB:.2f}")
    print(f"measured: peak {measured:.2f} GiB ({'CUDA allocated' if on_cuda else 'CPU RSS'}, largest step), "
          f"{tokens_per_s:.1f} completion tokens/s (median step)")
    if not on_cuda:
        print("comparison skipped: on CPU the peak is the resident set size, not CUDA memory")
        return 0
    over = measured * plan.GiB / p["total"] - 1
    verdict = "OVER THE PLAN" if over > c.tolerance else "within the plan"
    print(f"measured / plan = {1 + over:.3f}: {verdict} (tolerance +{c.tolerance:.0%})")
    return 1 if over > c.tolerance else 0


def main(argv=None):
    p = cli.parser("Train a depth-cut Qwen2.5-VL-3B (one 4-GPU shard's worth) on one GPU and compare its peak memory "
                   "with the planner's", prog="gpucheck.py")
    cli.add_flags(p, Check)
    with cli.user_errors("gpucheck.py"):
        c = Check(**cli.given(p, argv))
        image_size(c.image_size)
        if not c.tolerance >= 0:  # `not >=`: NaN too
            raise ValueError(f"--tolerance {c.tolerance}: pass a fraction >= 0, e.g. 0.1 (+10%)")
        if c.shard_of < 1:  # cut_depth would divide by it
            raise ValueError(f"--shard-of {c.shard_of}: must be >= 1 (1: the whole model's state on one GPU)")
        run_config(c)  # a bad --steps, --prompts, ... fails here, before the model and the data are written
        plan.load_config(c.model)  # a bad --model fails here, in one line
        if c.model != "tiny-config" and not torch.cuda.is_available():  # on CPU: GBs written, minutes of training
            raise ValueError(f"--model {c.model}: the GPU check needs a CUDA GPU and torch sees none; on CPU, "
                             "--model tiny-config runs the same path on a tiny config")
        cli.make_folder(c.out, f"--out {c.out}")
    import torch.distributed as dist
    try:
        status = check(c)
        dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return status


if __name__ == "__main__":
    sys.exit(main())
