"""anomalyr1.py — the model side of AnomalyR1: load Qwen2.5-VL, build the prompt, generate, read boxes.

    python anomalyr1.py --image query.png [--template normal.png ...] [--question "..." --options "A=Yes.,B=No."]
                        [--model tiny|/path/to/Qwen2.5-VL-3B-Instruct] [--out overlay.png]

`--model tiny` (the default) builds a ~1 M-parameter Qwen2.5-VL fully offline the first time (tiny.py) and caches
it in ~/.cache/anomalyr1/ (or $ANOMALYR1_CACHE). A real checkpoint is a local Hugging Face folder; it runs through exactly
the same functions below.

Prompt (paper §3.4 + MMAD's protocol):
    system:  the paper's template ("A conversation between User and Assistant. …")
    user:    MMAD's inspector instruction, "Following is 1 image of normal sample…", [template images],
             "Following is the query image:", [query image], "Following is the question list:", question,
             "A. …" option lines, then "Respond with your reasoning in <think> </think> tags followed by a single
             letter answer in <answer> </answer> tags."
"""

import contextlib
import dataclasses
import importlib.util
import json
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageDraw

import cli
import data
import roam


# ----------------------------------------------------------------------------- prompt text

# Paper §3.4, verbatim up to grammar; the system turn of every conversation.
SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a choice question and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer."
)
RESPOND_LETTER = ("Respond with your reasoning in <think> </think> tags "
                  "followed by a single letter answer in <answer> </answer> tags.")
RESPOND_BOX = ("Respond with your reasoning in <think> </think> tags followed by the bounding box "
               'in JSON format, {"bbox_2d": [x1, y1, x2, y2]}, in <answer> </answer> tags.')
# MMAD's evaluation wording (Jiang et al., ICLR 2025).
INSPECTOR = ("You are an industrial inspector who checks products by images. You should judge whether there is "
             "a defect in the query image and answer the questions about it.")
DEFAULT_QUESTION = "Is there any defect in the object?"
DEFAULT_OPTIONS = {"A": "Yes.", "B": "No."}

# Paper §4.1: ultra-high-resolution images were compressed to 1000 × 800 to train within 48 GB GPUs.
MAX_IMAGE_SIZE = (1000, 800)

# A random or young policy can sample these; the next forward then fails ("Image features and image tokens do not
# match"), so generation never emits them.
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
END_OF_TURN = "<|im_end|>"


def format_question(question, options):
    """MMAD's question block: the question, then one 'A. text' line per option."""
    return "\n".join([question] + [f"{letter}. {text}" for letter, text in options.items()])


def conversation(question, options, query_image, template_images=()):
    """Chat messages for one MMAD question; images are paths or PIL images, templates come before the query."""
    text = lambda t: {"type": "text", "text": t + "\n"}  # the chat template joins parts with nothing between
    content = [text(INSPECTOR)]
    if template_images:
        n = len(template_images)
        content.append(text(f"Following is {n} image{'s' if n > 1 else ''} of normal sample, "
                            "which can be used as a template to compare the image being queried."))
        content += [{"type": "image", "image": image} for image in template_images]
    content += [text("Following is the query image:"),
                {"type": "image", "image": query_image},
                text("Following is the question list:"),
                text(format_question(question, options)),
                {"type": "text", "text": RESPOND_LETTER if options else RESPOND_BOX}]
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": content}]


def build_messages(sample, shots=0, templates="similar"):
    """The conversation for a data.Sample with `shots` of its normal template images (MMAD's 0/1/2-shot)."""
    template_paths = sample.template_paths(shots, templates) if shots else []
    return conversation(sample.question, sample.options, sample.path(), template_paths)


# ----------------------------------------------------------------------------- images

def load_image(path, max_size=MAX_IMAGE_SIZE):
    """Open an image as RGB, downscaled (aspect kept) to fit max_size in its own orientation (§4.1). Decoding is
    data.open_image's, shared by every entry point: 16-bit images scaled to 8 bits, transparent ones
    composited on white; a missing or corrupt file raises FileNotFoundError/ValueError naming it."""
    image = data.open_image(path)
    size = fitted_size(image.size, max_size)
    return image if size == image.size else image.resize(size, Image.BICUBIC)


def fitted_size(size, max_size=MAX_IMAGE_SIZE):
    """(w, h) of an image of `size` once load_image has fitted it into max_size: known without decoding it."""
    (w, h), long_side, short_side = size, max(max_size), min(max_size)
    scale = min(1.0, long_side / max(w, h), short_side / min(w, h))
    return (max(1, round(w * scale)), max(1, round(h * scale))) if scale < 1.0 else (w, h)


def prepare(processor, samples, shots=0, templates="similar"):
    """Tokenize a batch of samples (left-padded, so generation appends on the right): the processor's BatchFeature,
    input_ids [B, P], attention_mask [B, P], mm_token_type_ids [B, P], pixel_values [patches, C·T·14·14],
    image_grid_thw [images, 3] (images in prompt order, sample by sample)."""
    batch = prepare_conversations(processor, [build_messages(s, shots, templates) for s in samples])
    lengths, limit = batch["attention_mask"].sum(1), processor.tokenizer.model_max_length  # [B]; see load()
    if lengths.max() > limit:  # attention over it could take all the memory before anything said why
        raise ValueError(f"{samples[int(lengths.argmax())].image}: its question makes a prompt of "
                         f"{int(lengths.max())} tokens, more than the model takes ({limit}); shorten it")
    return batch


def prepare_conversations(processor, conversations, padding_side="left"):
    texts, images = [], []
    for messages in conversations:
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        images += [part["image"] if isinstance(part["image"], Image.Image) else load_image(part["image"])
                   for part in messages[1]["content"] if part["type"] == "image"]
    return processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side=padding_side)


# ----------------------------------------------------------------------------- generation and log-probs

def special_id(processor, token):
    return processor.tokenizer.convert_tokens_to_ids(token)


# a processed batch's per-token tensors [B, P]; the others (pixel_values, image_grid_thw) are per image
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def split_prompts(batch, vision_start_id):
    """The B prompts of a left-padded batch as B one-prompt batches [1, P_r] with their padding dropped; each takes
    its own image grids [images_r, 3] and patches [patches_r, D] (the processor lays images out in row order)."""
    counts = (batch["input_ids"] == vision_start_id).sum(1).tolist()               # images per row
    grids = batch["image_grid_thw"].split(counts)
    patches = batch["pixel_values"].split([int(g.prod(-1).sum()) for g in grids])
    prompts = []
    for row, (grid, pixels) in enumerate(zip(grids, patches)):
        real = batch["attention_mask"][row].bool()                                # [P]
        tokens = {k: batch[k][row, real][None] for k in TOKEN_KEYS}               # [1, P_r] each
        prompts.append({**tokens, "pixel_values": pixels, "image_grid_thw": grid})
    return prompts


@torch.no_grad()
def generate(model, processor, batch, max_new_tokens=256, temperature=1.0, num_return_sequences=1, do_sample=True,
             decoding=contextlib.nullcontext):
    """Sample `num_return_sequences` completions per prompt with `generate`.

    Returns completion_ids [B·G, T] (rows grouped: prompt 0's G completions, then prompt 1's, …; padded with the
    pad token after the end of turn) and their texts (special tokens dropped, cut at the end of turn).

    Each prompt is prefilled once, images included, and its KV cache copied G times; generate then continues
    all B·G rows from there (its own path for continuing from a cache). The G samples of a prompt would
    otherwise each prefill the same ~2k prompt tokens. The decode loop runs inside `decoding(model)`.
    """
    batch = {k: v.to(model.device) for k, v in batch.items()}
    group = num_return_sequences
    # all but the last prompt token: generate needs one uncached token to start from. This forward also stores
    # the prompts' mRoPE offsets (model.model.rope_deltas [B, 1]), from which generate numbers the new tokens.
    cache = model(**{k: v[:, :-1] if k in TOKEN_KEYS else v for k, v in batch.items()},
                  use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(group)                                            # [B·G] rows of [P-1] tokens
    model.model.rope_deltas = model.model.rope_deltas.repeat_interleave(group, 0)   # [B·G, 1]
    # sampling: from π_θ itself, which eq. (1) and (5) score; the released Instruct checkpoints'
    # generation_config.json would otherwise add their top_k, top_p and repetition_penalty (1.05) to every rollout
    sampling = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, repetition_penalty=1.0)
                if do_sample and temperature > 0 else dict(do_sample=False))  # temperature 0: greedy
    with decoding(model):
        out = model.generate(
            **{k: batch[k].repeat_interleave(group, 0) for k in TOKEN_KEYS},       # [B·G, P] each
            past_key_values=cache,
            max_new_tokens=max_new_tokens, suppress_tokens=[special_id(processor, t) for t in VISION_TOKENS],
            eos_token_id=special_id(processor, END_OF_TURN), pad_token_id=processor.tokenizer.pad_token_id,
            return_dict_in_generate=True, **sampling)
    completion_ids = out.sequences[:, batch["input_ids"].shape[1]:]                  # [B·G, T]
    return completion_ids, decode(processor, completion_ids)


def completion_mask(completion_ids, eos_id):
    """1 for completion tokens up to and including the first end-of-turn token, 0 after it."""
    is_eos = completion_ids == eos_id                                               # [N, T]
    eos_seen_before = (is_eos.cumsum(1) - is_eos.long()) > 0                        # [N, T]
    return (~eos_seen_before).float()                                               # [N, T]


def decode(processor, completion_ids):
    mask = completion_mask(completion_ids, special_id(processor, END_OF_TURN)).bool()
    return [processor.tokenizer.decode(ids[m], skip_special_tokens=True) for ids, m in zip(completion_ids, mask)]


def logprobs(model, prompt, completions, temperature=1.0):
    """log π_θ(o_t | q, o_<t) [G, T] of G completions [G, T] of one unpadded prompt [1, P]: the definition.

    One ordinary forward per completion over [q | o_i]; the model numbers the positions itself (3-D mRoPE for the
    image tokens, which it finds through mm_token_type_ids). The logits at position P - 1 + t predict o_t.
    packed_logprobs computes the same numbers in one forward; this is the version to read, and the one the tests
    hold it to (log-probs and gradients). π_θ at `temperature` T is softmax(logits / T), what generate samples from
    at T (TRL scores rollouts so too); / 1.0 is exact, so T = 1 changes no bit."""
    prompt = {k: v.to(model.device) for k, v in prompt.items()}
    P = prompt["input_ids"].shape[1]
    rows = []
    for o in completions.to(model.device):                                          # [T]
        ids = torch.cat([prompt["input_ids"], o[None]], 1)                          # [1, P+T]
        types = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(o)[None]], 1)  # [1, P+T]: 0 = text
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                       pixel_values=prompt["pixel_values"], image_grid_thw=prompt["image_grid_thw"],
                       use_cache=False).logits[0, P - 1:-1].float() / temperature     # [T, V]
        rows.append(logits.log_softmax(-1).gather(-1, o[:, None]).squeeze(-1))      # [T]
    return torch.stack(rows)                                                        # [G, T]


def packed_logprobs(model, prompt, completions, temperature=1.0):
    """logprobs(model, prompt, completions, temperature), the same [G, T] numbers, in one forward instead of G.

    The row is [q | o_1 | o_2 | … | o_G]: the prompt and its images go through the model once, not G times. With
    the paper's settings (two 1000×800 images ≈ 2.3k prompt tokens, G = 8 × 256 completion tokens) that is 4.3k
    tokens instead of 20k, in the policy forward, its backward and the reference forward alike. Two things make
    each o_i see exactly what generate saw, the prompt and then itself:
    - the attention mask: a token attends to the prompt and to earlier tokens of its own completion, never to
      another completion;
    - the positions: every completion starts right after the prompt. Qwen2.5-VL's 3-D mRoPE gives the prompt's
      image tokens (t, h, w) positions; text after it continues at max position + 1 on all three axes
      (get_rope_index's rope delta). Without explicit positions the model would number o_2 after o_1.
    The attention mask is 4-D, which sdpa takes and flash-attn does not (load() keeps the language model on sdpa).
    """
    prompt = {k: v.to(model.device) for k, v in prompt.items()}
    completions = completions.to(model.device)
    G, T = completions.shape
    P = prompt["input_ids"].shape[1]
    prompt_positions, rope_delta = model.model.get_rope_index(
        prompt["input_ids"], mm_token_type_ids=prompt["mm_token_type_ids"], image_grid_thw=prompt["image_grid_thw"],
        attention_mask=prompt["attention_mask"])                                    # [3, 1, P], [1, 1]
    t = torch.arange(T, device=model.device)                                        # [T]
    completion_positions = (P + rope_delta + t).expand(3, G, T).reshape(3, 1, G * T)  # [3, 1, G·T]
    segment = torch.arange(G + 1, device=model.device).repeat_interleave(
        torch.tensor([P] + [T] * G, device=model.device))                          # [L]: 0 = prompt, i = o_i
    causal = torch.ones(len(segment), len(segment), dtype=torch.bool, device=model.device).tril()  # [L, L]
    sees = causal & ((segment[:, None] == segment[None, :]) | (segment[None, :] == 0))  # [L, L] query × key
    # o_i's token t is predicted at the position before it: the prompt's last token for t = 0
    starts = P + T * torch.arange(G, device=model.device)[:, None]                  # [G, 1]
    predicted_at = torch.where(t == 0, P - 1, starts + t - 1)                       # [G, T]
    logits = model(
        input_ids=torch.cat([prompt["input_ids"], completions.reshape(1, G * T)], 1),                      # [1, L]
        attention_mask=sees[None, None],                                                                  # [1, 1, L, L]
        position_ids=torch.cat([prompt_positions, completion_positions], 2),                               # [3, 1, L]
        mm_token_type_ids=torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(completions).reshape(1, -1)], 1),
        pixel_values=prompt["pixel_values"], image_grid_thw=prompt["image_grid_thw"],
        logits_to_keep=predicted_at.flatten(), use_cache=False,
    ).logits[0].view(G, T, -1)                                                      # [G, T, V]
    logps = []
    for row_logits, row_ids in zip(logits, completions):  # fp32 one completion at a time: [T, V], not [G, T, V]
        row_logits = row_logits.float() / temperature                               # [T, V]
        logps.append(row_logits.gather(-1, row_ids[:, None]).squeeze(-1) - row_logits.logsumexp(-1))  # [T]
    return torch.stack(logps)                                                       # [G, T]


# ----------------------------------------------------------------------------- loading (tiny or a local folder)

def image_only_processor_class():
    """Qwen2_5_VLProcessor without its video processor, which needs torchvision (absent on CPU installs here)."""
    from transformers import Qwen2_5_VLProcessor

    class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    return Qwen2_5_VLImageProcessor


def _safetensors_problem(path) -> str | None:
    """Why a .safetensors file is unusable (missing, empty, truncated, damaged header), or None. Reads only the
    header: a truncated download is caught here, in milliseconds, not as a SafetensorError deep in loading."""
    if not os.path.isfile(path):
        return "is a folder, not a file" if os.path.isdir(path) else "is missing"
    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little") if size >= 8 else -1
            if n < 0 or n > size - 8:
                return f"is truncated ({size} bytes)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return "has a damaged header"
    if 8 + n + end != size:
        return f"is truncated or damaged ({size} bytes, its header describes {8 + n + end})"
    return None


def check_model_folder(path):
    """Raise FileNotFoundError/ValueError naming `path` and the fix unless it looks like a loadable Qwen2.5-VL
    folder: config.json (valid JSON, model_type qwen2_5_vl), complete safetensors weights (one file or an index
    and its shards), a tokenizer and an image processor config. Cheap: reads headers, never the weights."""
    hint = "pass --model tiny or the folder of a downloaded Qwen2.5-VL-*-Instruct"
    if os.path.isfile(path):
        raise ValueError(f"{path}: is a file; pass the model FOLDER holding it (config.json, *.safetensors, ...)")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such model folder; {hint}")
    files = set(os.listdir(path))
    if "config.json" not in files:
        if "final" in files or any(f.startswith("step-") for f in files):  # a grpo.py --out folder
            hint = f"that is a grpo.py run folder: pass its checkpoint, {os.path.join(path, 'final')} or a step-*/"
        raise FileNotFoundError(f"no Qwen2.5-VL checkpoint at {path} (config.json missing); {hint}")
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, RecursionError, OSError) as e:   # JSONDecodeError, UnicodeDecodeError; a folder by that name
        raise ValueError(f"{path}/config.json: not valid JSON ({e}); re-download it with the model") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}/config.json: a JSON {type(config).__name__}, not an object; re-download it")
    model_type = config.get("model_type")
    if model_type != "qwen2_5_vl":
        raise ValueError(f"{path}/config.json: model_type {model_type!r} is not Qwen2.5-VL ('qwen2_5_vl'); this "
                         f"code runs Qwen2.5-VL only: {hint}")
    if "model.safetensors.index.json" in files:
        index = os.path.join(path, "model.safetensors.index.json")
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            raise ValueError(f"{index}: not a valid safetensors index ({type(e).__name__}: {e}); re-download it "
                             "with the model") from None
    elif "model.safetensors" in files:
        shards = ["model.safetensors"]
    else:
        pickles = sorted(f for f in files if f.startswith("pytorch_model") and f.endswith(".bin")
                         or f.endswith((".pt", ".pth")))                  # not training_args.bin and the like
        if pickles:
            raise ValueError(
                f"{path}: holds only pickle weights ({', '.join(pickles[:2])}); weights load from safetensors only "
                "(unpickling can run code). Download the model's *.safetensors files, or convert once with a "
                "source you trust: python -c \"from transformers import Qwen2_5_VLForConditionalGeneration as M; "
                f"M.from_pretrained('{path}', use_safetensors=False).save_pretrained('{path}')\"")
        raise FileNotFoundError(f"{path}: no weights (model.safetensors or model.safetensors.index.json); "
                                "download the model's *.safetensors files into it")
    for shard in shards:
        if not isinstance(shard, str) or os.path.basename(shard) != shard:
            raise ValueError(f"{path}/model.safetensors.index.json: shard {shard!r} is not a file name in the folder; "
                             "re-download the index")
        if why := _safetensors_problem(os.path.join(path, shard)):
            raise ValueError(f"{path}/{shard}: {why}; re-download it (an interrupted download leaves it short)")
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
        raise FileNotFoundError(f"{path}: no tokenizer (tokenizer.json, or vocab.json + merges.txt); copy them from "
                                "the same Qwen2.5-VL release")
    if not files & {"preprocessor_config.json", "processor_config.json"}:
        raise FileNotFoundError(f"{path}: no image processor config (preprocessor_config.json); copy it from the "
                                "same Qwen2.5-VL release")
    for name in sorted(files & {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                                "processor_config.json", "chat_template.json", "generation_config.json"}):
        try:                                             # transformers' own errors would not say which file
            with open(os.path.join(path, name), encoding="utf-8") as f:
                json.load(f)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{path}/{name}: not valid JSON ({e}); re-download it with the model") from None


def load(model="tiny", device=None, dtype=None):
    """(model, processor) for "tiny" (built offline on first use) or a local Hugging Face Qwen2.5-VL folder.

    bf16 on CUDA, with flash-attn 2 in the vision tower when flash-attn imports; fp32 on CPU; sdpa everywhere
    else. Weights load only from safetensors and never run remote code. A folder that cannot work (see
    check_model_folder, or anything transformers rejects) raises FileNotFoundError/ValueError naming it.
    """
    from huggingface_hub.errors import StrictDataclassError
    from safetensors import SafetensorError
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # a "Loading weights" bar on stderr would bury our one-line errors
    if model == "tiny":
        import tiny  # tiny.py imports this module for the prompt text: imported here, not at the top
        path = tiny.build_tiny()
    else:
        path = model
    check_model_folder(path)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if on_cuda else torch.float32)
    # the language model stays on sdpa: it takes packed_logprobs' shared-prompt mask, which flash-attn cannot
    flash = on_cuda and importlib.util.find_spec("flash_attn") is not None
    attention = {"text_config": "sdpa", "vision_config": "flash_attention_2" if flash else "sdpa"}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load report's table: the folder's faults are named below in one line
    try:
        policy, loaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=dtype, attn_implementation=attention, use_safetensors=True, output_loading_info=True,
            ignore_mismatched_sizes=True)
        processor = image_only_processor_class().from_pretrained(path)
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError, SafetensorError,
            StrictDataclassError) as e:  # the last: a config.json that contradicts itself (layers vs layer_types)
        first = " ".join(str(e).split())[:300]  # the validator names the contradiction on its second line
        raise ValueError(f"{path}: cannot load this Qwen2.5-VL folder ({type(e).__name__}: {first}); re-download "
                         "the files it names, or pass --model tiny") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    # transformers fills a tensor config.json has and the weights lack (or hold in another shape) with random values
    unfit = sorted(loaded["missing_keys"]) + sorted(k for k, *_ in loaded["mismatched_keys"])
    unfit += sorted(loaded["unexpected_keys"])  # and drops weights config.json has no place for
    if unfit:
        raise ValueError(f"{path}: config.json does not match the weights ({len(unfit)} tensors missing, extra or "
                         f"of another shape, e.g. {unfit[0]}); re-download config.json with the *.safetensors files")
    policy.to(device)
    if processor.chat_template is None:
        raise ValueError(f"{path}: no chat template (chat_template.json/.jinja or in tokenizer_config.json); copy it "
                         "from the same Qwen2.5-VL release")
    # the longest prompt prepare() takes: the tokenizer's own limit can exceed the model's position table
    positions = policy.config.text_config.max_position_embeddings
    processor.tokenizer.model_max_length = min(processor.tokenizer.model_max_length, positions)
    return policy, processor


# ----------------------------------------------------------------------------- boxes and masks (paper §3.1)

def model_input_size(processor, image_size):
    """(width, height) of an image as the model sees it: Qwen2.5-VL resizes to multiples of 28 within its pixel
    budget, and its boxes are absolute pixel coordinates in that frame."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize  # no torchvision needed
    ip = processor.image_processor
    height, width = smart_resize(image_size[1], image_size[0], factor=ip.patch_size * ip.merge_size,
                                 min_pixels=ip.size["shortest_edge"], max_pixels=ip.size["longest_edge"])
    return width, height


def box_to_input_frame(box, original_size, input_size):
    """[x1, y1, x2, y2] in original-image pixels → the model's input frame."""
    sx, sy = input_size[0] / original_size[0], input_size[1] / original_size[1]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def parse_box(text, input_size, original_size):
    """The first {"bbox_2d": [x1, y1, x2, y2]} in the reply's <answer> (else anywhere in it), rescaled from the
    model's input frame to the original image and clipped to it; None when the reply holds no valid box."""
    box = roam.parse_bbox(roam.parse(text).answer) or roam.parse_bbox(text)
    if box is None:
        return None
    scaled = box_to_input_frame(box, input_size, original_size)  # the same scaling, the other way round
    w, h = original_size
    return [min(max(scaled[0], 0), w), min(max(scaled[1], 0), h), min(max(scaled[2], 0), w), min(max(scaled[3], 0), h)]


def box_mask(size, box):
    """A filled-box mask (L mode, 255 inside): the default mask when no SAM2 is given."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle([round(v) for v in box], fill=255)
    return mask


def sam2_mask(image, box, sam2_path):
    """Refine a box into a pixel mask with SAM2 (paper §3.1) from a local transformers SAM2 folder."""
    try:
        from transformers import Sam2Model, Sam2Processor
        processor = Sam2Processor.from_pretrained(sam2_path)
    except Exception as e:  # transformers' SAM2 image processor imports torchvision at module level
        raise ImportError(f"SAM2 is unavailable here ({type(e).__name__}: {e}); transformers' SAM2 needs "
                          "torchvision, which this CPU install leaves out — drop --sam2 to use the box mask") from None
    model = Sam2Model.from_pretrained(sam2_path, use_safetensors=True).eval()
    inputs = processor(images=image, input_boxes=[[box]], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, multimask_output=False)
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0]  # [1, 1, H, W]
    return Image.fromarray((masks[0, 0].numpy() > 0).astype(np.uint8) * 255, "L")


def overlay(image, box, mask):
    """The image with the mask tinted red and the box outlined: what an inspector looks at."""
    tinted = Image.blend(image, Image.new("RGB", image.size, (255, 0, 0)), 0.45)
    shown = Image.composite(tinted, image, mask)
    ImageDraw.Draw(shown).rectangle([round(v) for v in box], outline=(255, 0, 0), width=max(2, image.width // 200))
    return shown


# ----------------------------------------------------------------------------- command line

@dataclasses.dataclass
class Config:
    image: str = cli.option(cli.REQUIRED, "the query image")
    template: list[str] = cli.option([], "a normal sample shown before the query image (repeatable: 0, 1 or k)")
    question: str = cli.option(DEFAULT_QUESTION, "the question")
    options: str = cli.option("A=Yes.,B=No.", "the options, 'A=Yes.,B=No.'; '' for a box question", empty_ok=True)
    model: str = cli.option("tiny", "'tiny' (offline, built on first use) or a local Qwen2.5-VL folder")
    max_new_tokens: int = cli.option(256, "completion length limit")
    sample: bool = cli.option(False, "sample at temperature 1 instead of greedy decoding")
    out: str | None = cli.option(None, "write an overlay PNG of the answer's box here")
    sam2: str | None = cli.option(None, "local transformers SAM2 folder to turn the box into a pixel mask (§3.1)")


def ask(cfg):
    """Print the model's reply to one question about cfg.image, the option it chose, and the box it drew (in the
    original image's pixels); return (reply, box or None)."""
    options = cli.parse_options(cfg.options)
    if cfg.max_new_tokens < 1:  # transformers' own line comes after the model loaded and names no flag
        raise ValueError(f"--max-new-tokens {cfg.max_new_tokens}: pass a positive number of tokens")
    if cfg.out:  # before the model runs
        cli.check_png_out(cfg.out)
    if cfg.sam2 and not os.path.isdir(cfg.sam2):  # SAM2 loads after the answer: a bad path would cost a generation
        raise ValueError(f"--sam2 {cfg.sam2}: not a folder; pass a local transformers SAM2 folder or drop --sam2")
    query = os.path.abspath(cfg.image)
    shown = [load_image(path) for path in [query] + cfg.template]  # a bad image fails before the model loads
    sample = data.Sample(image=query, root=os.path.dirname(query), question=cfg.question, options=options,
                         answer="", question_type="", similar_templates=[os.path.abspath(t) for t in cfg.template])
    model, processor = load(cfg.model)
    batch = prepare(processor, [sample], shots=len(cfg.template))
    reply = generate(model, processor, batch, max_new_tokens=cfg.max_new_tokens, do_sample=cfg.sample)[1][0]
    print(reply)
    if options:
        choice = roam.extract_choice(roam.parse(reply).answer or "", options)
        print(f"answer: {choice}. {options[choice]}" if choice else "answer: (none: the reply names no option)")
    box = parse_box(reply, model_input_size(processor, shown[0].size), data.image_size(query))
    if box is not None:
        print("box:", [round(v, 1) for v in box])
    return reply, box


def main(argv=None):
    p = cli.parser("Ask Qwen2.5-VL an MMAD question about one image (AnomalyR1 prompt).", prog="anomalyr1.py")
    cli.add_flags(p, Config)
    cfg = Config(**cli.given(p, argv))
    with cli.user_errors("anomalyr1.py", (ValueError, OSError, ImportError)):
        reply, box = ask(cfg)
        if cfg.out:
            if box is None:
                fix = ("ask a box question (--options '') or drop --out" if cfg.options.strip() else
                       "raise --max-new-tokens if the reply was cut off, or try a model trained with the iou reward")
                raise ValueError(f"{roam.why_no_box(reply)}, so there is nothing to draw into {cfg.out}; {fix}")
            original = data.open_image(cfg.image)  # the same decoding as the model's input (16-bit, alpha)
            mask = sam2_mask(original, box, cfg.sam2) if cfg.sam2 else box_mask(original.size, box)
            overlay(original, box, mask).save(cfg.out)
            print(f"overlay written to {cfg.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
