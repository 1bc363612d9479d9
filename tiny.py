"""tiny.py — the offline tiny Qwen2.5-VL: tokenizer, chat template, config, warm-up, build.

`build_tiny()` builds a ~1 M-parameter Qwen2.5-VL fully offline the first time (tokenizer, chat template, image
processor, config and weights), caches it in ~/.cache/anomalyr1/ (or $ANOMALYR1_CACHE) under TINY_VERSION, and warms
it up so that, like an Instruct model, it already speaks the paper's `<think>…</think><answer>…</answer>` format
and sees something (colours) before GRPO: MMAD-shaped questions answered with a random option, named by its text,
and questions about a picture's background colour answered truly. `anomalyr1.load("tiny")` calls it.
"""
import json
import math
import os
import random
import sys
import tempfile

import torch
from PIL import Image, ImageDraw

import data
import mvtec
import synth
from anomalyr1 import (END_OF_TURN, INSPECTOR, RESPOND_BOX, RESPOND_LETTER, SYSTEM_PROMPT, conversation,
                       format_question, image_only_processor_class)

# Qwen2.5-VL's chat template (from the released Instruct checkpoints), so the tiny model's prompts are
# token-for-token shaped like the real model's.
QWEN_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
# Qwen's special tokens in Qwen's order (ids 151643… in the real vocabulary; appended after the BPE vocab here).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

TINY_VERSION = "tiny-v5"  # bump whenever the build changes: the cache is keyed by it
# The tiny model's vocabulary of answers is the synthetic set's: its products and defect kinds (MVTec's generic ones
# too, which mvtec.build adds as distractors). A real Qwen2.5-VL knows every product's name; this one learns the names
# here, answered at random, so that it starts GRPO naming each product about equally often.
PRODUCTS = [mvtec.phrase(category, True) for category in synth.SYNTH_CATEGORIES]
DEFECTS = sorted({mvtec.phrase(kind) for _, kinds in synth.SYNTH_CATEGORIES.values() for kind in kinds}
                 | {mvtec.phrase(kind) for kind in mvtec.GENERIC_DEFECTS})
WARMUP_QUESTIONS = [  # (question, option pool, options per question): MMAD's question shapes
    ("Is there any defect in the object?", ["Yes.", "No."], 2),
    ("What type of defect is present in the object?", DEFECTS, 4),
    ("Where is the defect located in the image?", mvtec.REGIONS, 4),
    ("What kind of product is shown in the image?", PRODUCTS, 4),
    ("What is the likely impact of the defect on the product?",
     ["It weakens the structure.", "It has no effect.", "It only changes the color.", "It affects the function."], 4),
    ("Locate the defect in the object. Output its bounding box in JSON format.", [], 0),
]
COLOURS = {"Red.": (210, 40, 40), "Green.": (40, 160, 60), "Blue.": (40, 70, 210), "Yellow.": (230, 210, 40),
           "White.": (240, 240, 240), "Black.": (20, 20, 20), "Purple.": (140, 50, 170), "Orange.": (240, 140, 30),
           "Grey.": (128, 128, 128), "Brown.": (120, 80, 40)}
SIGHT_SHARE = 0.3  # warm-up examples that are a colour question with its true answer


def reply(options, letter):
    """The reply names the chosen option by its text, not its letter. Options are reshuffled for every question
    (§4.2), so answering a letter means binding each letter to its text, which a 2-layer model does not learn in
    minutes of CPU (it stays at chance); the text it learns at once, and roam.extract_choice (like MMAD's scorer)
    reads an option's text as that option."""
    text = options[letter].rstrip(".")
    return f"<think>The image fits {text}. So the answer is {text}.</think><answer>{text}</answer>"


def warmup_example(rng):
    """One MMAD-shaped (question, options, reply): the reply names a random option.

    The choice is random on purpose: the warm-up teaches the format and the answer names, not the task, so that
    GRPO (not the warm-up) is what makes answers correct.
    """
    question, pool, k = WARMUP_QUESTIONS[rng.randrange(len(WARMUP_QUESTIONS))]
    if k == 0:
        # A box in the frame the model sees (at most 112 × 112 px): x1, y1 in 10-49, x2, y2 in 60-99, two digits each,
        # so a 2-layer LM writes a box with an area by learning which digits go where; with corners drawn anywhere
        # it wrote x1 > x2 (nothing to draw, IoU 0 for every sample).
        x, y, w, h = rng.randrange(0, 150), rng.randrange(0, 150), rng.randrange(10, 70), rng.randrange(10, 70)
        box = [10 + x % 40, 10 + y % 40, 60 + w % 40, 60 + h % 40]
        return question, {}, (f"<think>The defect is a small region that differs from the normal sample.</think>"
                              f'<answer>{{"bbox_2d": {json.dumps(box)}}}</answer>')
    options = dict(zip("ABCD", rng.sample(pool, k)))
    return question, options, reply(options, rng.choice(sorted(options)))


def sight_example(rng, size=224):
    """(image, question, options, reply) about a picture's background colour, answered truly: general sight, unlike
    the synthetic defect set, that keeps the image pathway in use (with random answers alone the warm-up teaches the
    model to ignore its images, and GRPO then does not learn to tell products apart)."""
    background, *others = rng.sample(list(COLOURS), 4)
    image = Image.new("RGB", (size, size), COLOURS[background])
    x, y, r = rng.randrange(60, 164), rng.randrange(60, 164), rng.randrange(20, 50)
    ImageDraw.Draw(image).ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(0, 256) for _ in range(3)))
    texts = [background] + others
    rng.shuffle(texts)
    options = dict(zip("ABCD", texts))
    return image, "What colour is the background?", options, reply(options, "ABCD"[texts.index(background)])


def warmup_image(rng, size=224):
    """A procedural 'product photo': a coloured background, a shape, sometimes a dark blemish."""
    image = Image.new("RGB", (size, size), tuple(rng.randrange(60, 200) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    x, y, r = rng.randrange(40, 184), rng.randrange(40, 184), rng.randrange(20, 60)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randrange(0, 256) for _ in range(3)))
    if rng.random() < 0.5:
        x, y = rng.randrange(size), rng.randrange(size)
        draw.line([x, y, x + rng.randrange(-40, 40), y + rng.randrange(-40, 40)], fill=(20, 20, 20), width=3)
    return image


def build_tiny_tokenizer(corpus):
    """Byte-level BPE (~1k tokens) with Qwen2's pre-tokenizer, then Qwen's special tokens in Qwen's order."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=1024, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    # eos = end of turn, pad = <|endoftext|>: as in Qwen2.5-VL-Instruct's tokenizer_config.json
    return Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace", model_max_length=32768,
                          eos_token=END_OF_TURN, pad_token="<|endoftext|>",
                          additional_special_tokens=QWEN_SPECIAL_TOKENS[1:])


def tiny_config(tokenizer):
    """A 2-layer Qwen2.5-VL whose token ids come from the tokenizer, so prompts mean the same as for the real one."""
    from transformers import Qwen2_5_VLConfig
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]},  # sums to head_dim/2
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=128,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[1]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)


def warm_up(model, processor, rng, steps=900, batch_size=8, lr=3e-3):
    """Teacher-forced next-token loss on synthetic replies only (the prompt tokens are not trained)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 *
                                                 (1 + math.cos(math.pi * s / steps)))
    images = [warmup_image(rng) for _ in range(64)]
    model.train()
    for _ in range(steps):
        texts, reply_lengths, batch_images = [], [], []
        for _ in range(batch_size):
            question, options, answer = warmup_example(rng)
            templates = [rng.choice(images)] if rng.random() < 0.5 else []
            query = rng.choice(images)
            if rng.random() < SIGHT_SHARE:
                query, question, options, answer = sight_example(rng)
            prompt = processor.apply_chat_template(conversation(question, options, query, templates),
                                                   add_generation_prompt=True, tokenize=False)
            texts.append(prompt + answer + END_OF_TURN)
            # The prompt ends in a newline and the reply starts a new pre-token, so they tokenize independently.
            reply_lengths.append(len(processor.tokenizer(answer + END_OF_TURN).input_ids))
            batch_images += templates + [query]
        batch = processor(text=texts, images=batch_images, return_tensors="pt", padding=True, padding_side="right")
        labels = torch.full_like(batch["input_ids"], -100)                          # [B, L]: -100 = not trained
        for row, (length, reply_length) in enumerate(zip(batch["attention_mask"].sum(1).tolist(), reply_lengths)):
            labels[row, length - reply_length:length] = batch["input_ids"][row, length - reply_length:length]
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()
    return loss.item()


def build_tiny(out_dir=None, warmup_steps=900):
    """Build (once) the offline tiny Qwen2.5-VL into the cache; deterministic; returns its folder."""
    out_dir = out_dir or os.path.join(data.cache_dir(), TINY_VERSION)
    if os.path.isfile(os.path.join(out_dir, "model.safetensors")):
        return out_dir
    # the first run is otherwise silent for a minute or two: say what it is doing, once
    print(f"building the offline tiny Qwen2.5-VL once ({warmup_steps} warm-up steps, about 2-3 min on 2 cores) "
          f"into {out_dir}", file=sys.stderr, flush=True)
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    rng = random.Random(0)
    corpus = [SYSTEM_PROMPT, RESPOND_LETTER, RESPOND_BOX, INSPECTOR, "Following is the query image:",
              "Following is 2 images of normal sample, which can be used as a template to compare the image being "
              "queried.", "Following is the question list:", "You are a helpful assistant."]
    for _ in range(2000):
        question, options, answer = warmup_example(rng)
        corpus += [format_question(question, options), answer]
        _, question, options, answer = sight_example(rng, size=8)
        corpus += [format_question(question, options), answer]
    tokenizer = build_tiny_tokenizer(corpus)
    # Small images keep CPU prompts short: at most 112×112 pixels = 16 visual tokens per image.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = image_only_processor_class()(image_processor, tokenizer, chat_template=QWEN_CHAT_TEMPLATE)
    # Two threads, whatever the machine: the other torchrun ranks wait at a barrier meanwhile, and two threads build
    # 35% faster than one on 2 cores (0.15 vs 0.23 s a step). A fixed count keeps the bytes the same on every machine:
    # one and two threads differ in the last bits, two and two do not (measured here). Not more: extra threads spin
    # against each other when other jobs share the cores (10× slower with 2 threads per process on 2 busy cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = Qwen2_5_VLForConditionalGeneration(tiny_config(tokenizer))
            warm_up(model, processor, random.Random(1), steps=warmup_steps)
    finally:
        torch.set_num_threads(threads)
    # Save beside the target, then rename: a killed build or a second process never sees a half-written folder.
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".building-", dir=parent)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Writing model shards" bar would be the run's one stray line
    try:
        model.save_pretrained(tmp, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    processor.save_pretrained(tmp)
    data.publish_dir(tmp, out_dir)
    return out_dir
