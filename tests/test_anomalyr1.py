"""The model side: tiny offline build, prompt layout, images, generation vs forward log-probs, boxes, CLI."""
import collections
import hashlib
import importlib.util
import json
import os
import random
import socket
import stat

import pytest
import torch
from PIL import Image

import anomalyr1
import roam
from tiny import COLOURS, QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, build_tiny, sight_example, warmup_example
from data import Sample


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_image(path, size=(96, 80), colour=(120, 60, 30)):
    Image.new("RGB", size, colour).save(path)
    return str(path)


def sample_for(query, templates=(), options=None, question=anomalyr1.DEFAULT_QUESTION):
    return Sample(image=os.path.abspath(query), root="/", question=question,
                  options=dict(anomalyr1.DEFAULT_OPTIONS if options is None else options), answer="A",
                  question_type="Anomaly Detection", similar_templates=[os.path.abspath(t) for t in templates])


# ----------------------------------------------------------------------------- the tiny build

def test_tiny_build_is_offline_and_deterministic(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the tiny build tried to open a network connection")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    umask = os.umask(0o027)          # a group-shared cache: the published folder follows the umask, not 0700
    try:
        a = build_tiny(str(tmp_path / "a"), warmup_steps=3)
    finally:
        os.umask(umask)
    b = build_tiny(str(tmp_path / "b"), warmup_steps=3)
    for name in ["model.safetensors", "tokenizer.json", "config.json"]:
        assert digest(os.path.join(a, name)) == digest(os.path.join(b, name)), name
    assert stat.S_IMODE(os.stat(a).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(b).st_mode) == 0o777 & ~umask
    assert not any(n.startswith(".building-") for n in os.listdir(tmp_path)), "temp build folder left behind"


def test_tiny_config_ids_match_the_tokenizer(tiny):
    model, processor = tiny
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert model.config.text_config.vocab_size == len(tok)
    # Qwen's special tokens stay whole tokens, in Qwen's order
    ids = tok.convert_tokens_to_ids(QWEN_SPECIAL_TOKENS)
    assert ids == sorted(ids) and len(set(ids)) == 14


def test_saved_and_reloaded_model_gives_identical_logprobs(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "copy", safe_serialization=True)
    processor.save_pretrained(tmp_path / "copy")
    assert not list((tmp_path / "copy").glob("*.bin")), "weights must be safetensors only"
    reloaded, reloaded_processor = anomalyr1.load(str(tmp_path / "copy"), device="cpu")
    query = write_image(tmp_path / "q.png")
    batch = anomalyr1.prepare(processor, [sample_for(query)])
    completion = torch.tensor([processor.tokenizer("<think>ok</think><answer>A</answer>").input_ids])
    reloaded_batch = anomalyr1.prepare(reloaded_processor, [sample_for(query)])
    vision_start = model.config.vision_start_token_id
    with torch.no_grad():
        expected = anomalyr1.packed_logprobs(model, anomalyr1.split_prompts(batch, vision_start)[0], completion)
        got = anomalyr1.packed_logprobs(reloaded.eval(), anomalyr1.split_prompts(reloaded_batch, vision_start)[0],
                                        completion)
    assert torch.equal(expected, got)


# ----------------------------------------------------------------------------- prompt and images

def test_template_images_come_before_the_query_image(tiny, tmp_path):
    _, processor = tiny
    query, template = write_image(tmp_path / "q.png"), write_image(tmp_path / "t.png", colour=(1, 2, 3))
    messages = anomalyr1.build_messages(sample_for(query, [template]), shots=1)
    images = [part["image"] for part in messages[1]["content"] if part["type"] == "image"]
    assert images == [os.path.abspath(template), os.path.abspath(query)]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    first_image, query_intro = text.index("<|vision_start|>"), text.index("Following is the query image:")
    assert text.index("Following is 1 image of normal sample") < first_image < query_intro < text.rindex("<|vision_start|>")
    assert text.count("<|vision_start|>") == 2
    # the paper's template (§3.4) is the system turn; MMAD's question block and the answer instruction end the user turn
    assert text.startswith("<|im_start|>system\n" + anomalyr1.SYSTEM_PROMPT + "<|im_end|>")
    assert "Following is the question list:\nIs there any defect in the object?\nA. Yes.\nB. No.\n" + \
        anomalyr1.RESPOND_LETTER + "<|im_end|>\n<|im_start|>assistant\n" in text
    two = processor.apply_chat_template(anomalyr1.build_messages(sample_for(query, [template, template]), shots=2),
                                        add_generation_prompt=True, tokenize=False)
    assert "Following is 2 images of normal sample" in two and two.count("<|vision_start|>") == 3


def test_zero_shot_prompt_has_only_the_query_image(tiny, tmp_path):
    _, processor = tiny
    query = write_image(tmp_path / "q.png")
    batch = anomalyr1.prepare(processor, [sample_for(query, [query])], shots=0)
    assert batch["image_grid_thw"].shape[0] == 1


@pytest.mark.parametrize("size,expected", [((3000, 3000), (800, 800)), ((4000, 1000), (1000, 250)),
                                           ((1000, 4000), (250, 1000)), ((640, 480), (640, 480))])
def test_large_images_are_downscaled_to_fit_1000x800(tmp_path, size, expected):
    path = write_image(tmp_path / "big.png", size=size)
    image = anomalyr1.load_image(path)
    assert image.size == expected and image.mode == "RGB"
    assert max(image.size) <= 1000 and min(image.size) <= 800
    assert anomalyr1.fitted_size(size) == expected  # what grpo.gold_answer uses, without decoding the image


def test_missing_image_is_one_clear_line(tmp_path):
    missing = str(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError) as err:
        anomalyr1.load_image(missing)
    assert missing in str(err.value) and "\n" not in str(err.value)
    assert "--root" not in str(err.value)  # anomalyr1.py has no --root: it said to check one


def test_corrupt_image_is_one_clear_line(tmp_path):
    good = write_image(tmp_path / "good.png", size=(200, 200))
    data = open(good, "rb").read()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as err:
        anomalyr1.load_image(str(corrupt))
    assert str(corrupt) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match="text.png"):
        anomalyr1.load_image(str(tmp_path / "text.png"))


def test_processor_works_without_torchvision(tiny, tmp_path):
    """A real Qwen2.5-VL folder names Qwen2VLImageProcessor and Qwen2_5_VLProcessor; it must load without
    torchvision, which is left out because PyPI's build is linked against CUDA and breaks CPU torch, and without
    which Qwen2_5_VLProcessor fails on its video processor (anomalyr1.image_only_processor_class drops it)."""
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    _, processor = tiny
    folder = tmp_path / "real-like"
    processor.tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").write_text(QWEN_CHAT_TEMPLATE)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    loaded = anomalyr1.image_only_processor_class().from_pretrained(str(folder))
    batch = loaded(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[Image.new("RGB", (56, 84))],
                   return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 6, 4]]  # 84×56 px = 6×4 patches of 14 px
    assert (batch["input_ids"] == loaded.image_token_id).sum() == 6  # merged 2×2 → 24/4 tokens


# ----------------------------------------------------------------------------- generation

def test_logprobs_match_generate_scores(tiny, tmp_path):
    """The plain definition (logprobs: one forward per [q | o_i], mRoPE found through mm_token_type_ids)
    reproduces the scores generate itself gave the tokens it sampled, for left-padded prompts with template
    images, G completions each, continued from the copied prefill cache."""
    model, processor = tiny
    queries = [write_image(tmp_path / f"q{i}.png", size=(90 + 20 * i, 70), colour=(40 * i, 90, 9)) for i in range(2)]
    samples = [sample_for(queries[0], [queries[1]]),
               sample_for(queries[1], options={"A": "Scratch.", "B": "Hole.", "C": "Stain.", "D": "Crack."},
                          question="What type of defect is present in the object?")]
    batch = anomalyr1.prepare(processor, samples, shots=1)
    assert batch["attention_mask"][:, 0].min() == 0, "want one left-padded row"
    outputs = []

    def generate_keeping_logits(**kwargs):  # transformers' own raw logits, before temperature and suppression
        outputs.append(type(model).generate(model, **kwargs, output_logits=True))
        return outputs[-1]
    model.generate = generate_keeping_logits
    try:
        torch.manual_seed(0)
        ids, texts = anomalyr1.generate(model, processor, batch, max_new_tokens=24, num_return_sequences=3)
    finally:
        del model.generate
    assert ids.shape[0] == 6 and len(texts) == 6
    scores = model.compute_transition_scores(outputs[0].sequences, outputs[0].logits, normalize_logits=True)  # [6, T]
    with torch.no_grad():
        plain = torch.cat([anomalyr1.logprobs(model, prompt, completions) for prompt, completions in
                           zip(anomalyr1.split_prompts(batch, model.config.vision_start_token_id), ids.split(3))])
    mask = anomalyr1.completion_mask(ids, anomalyr1.special_id(processor, anomalyr1.END_OF_TURN)).bool()
    assert (plain - scores)[mask].abs().max() < 1e-4


def test_rollouts_sample_from_the_policy_whatever_the_generation_config(tiny, tmp_path):
    """Qwen2.5-VL-Instruct's generation_config.json sets top_k 1, top_p 0.001 and repetition_penalty 1.05: a rollout
    drawn with them is not drawn from π_θ, which the ratio and the KL score. generate must override all three."""
    model, processor = tiny
    batch = anomalyr1.prepare(processor, [sample_for(write_image(tmp_path / "q.png"))], shots=0)
    seen = []

    def generate_capturing(**kwargs):
        seen.append(kwargs)
        return type(model).generate(model, **kwargs)
    saved = model.generation_config.to_dict()
    model.generation_config.update(top_k=1, top_p=0.001, repetition_penalty=1.05, temperature=0.1, do_sample=True)
    model.generate = generate_capturing
    try:
        anomalyr1.generate(model, processor, batch, max_new_tokens=2, num_return_sequences=2)
    finally:
        del model.generate
        model.generation_config = type(model.generation_config).from_dict(saved)
    assert {k: seen[0][k] for k in ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty")} == \
        {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "repetition_penalty": 1.0}


def test_packed_row_gives_the_logprobs_and_gradients_of_separate_rows(tiny, tmp_path):
    """packed_logprobs, one row [q | o_1 | o_2 | o_3], must score each o_i exactly as the plain definition
    (logprobs: a forward over [q | o_i] with Qwen2.5-VL choosing the positions itself) does: same log-probs, same
    gradient in every parameter."""
    model, processor = tiny
    query, template = write_image(tmp_path / "q.png", (100, 70)), write_image(tmp_path / "t.png", (80, 90), (9, 9, 9))
    batch = anomalyr1.prepare(processor, [sample_for(query, [template])], shots=1)
    prompt = anomalyr1.split_prompts(batch, model.config.vision_start_token_id)[0]
    g = torch.Generator().manual_seed(0)
    completions = torch.randint(0, min(processor.tokenizer.all_special_ids), (3, 9), generator=g)  # [G, T], plain text
    weights = torch.randn(3, 9, generator=g)                    # a loss that depends on every log-prob
    results = []
    try:
        for fn in (anomalyr1.logprobs, anomalyr1.packed_logprobs):
            model.zero_grad(set_to_none=True)
            logps = fn(model, prompt, completions)
            (logps * weights).sum().backward()
            results.append((logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    finally:
        model.zero_grad(set_to_none=True)
    (expected, expected_grads), (packed, packed_grads) = results
    assert (packed - expected).abs().max() < 1e-4
    assert expected_grads.keys() == packed_grads.keys() and any("visual" in n for n in packed_grads)
    for name, grad in expected_grads.items():
        assert (packed_grads[name] - grad).abs().max() <= 1e-4 * (1 + grad.abs().max()), name


def test_logprobs_score_at_the_sampling_temperature(tiny, tmp_path):
    """A rollout drawn at temperature T comes from softmax(logits / T): the ratio and the KL must score that
    distribution, not T = 1's. Both log-prob functions equal log_softmax(logits / T) gathered by hand from one plain
    forward per [q | o_i]."""
    model, processor = tiny
    batch = anomalyr1.prepare(processor, [sample_for(write_image(tmp_path / "q.png", (100, 70)))], shots=0)
    prompt = anomalyr1.split_prompts(batch, model.config.vision_start_token_id)[0]
    P = prompt["input_ids"].shape[1]
    completions = torch.randint(0, min(processor.tokenizer.all_special_ids), (2, 7),
                                generator=torch.Generator().manual_seed(0))  # [G, T], plain text
    by_hand = []
    with torch.no_grad():
        for o in completions:                                                  # [T]
            ids = torch.cat([prompt["input_ids"], o[None]], 1)                 # [1, P+T]
            types = torch.cat([prompt["mm_token_type_ids"], torch.zeros_like(o)[None]], 1)  # [1, P+T]
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                           pixel_values=prompt["pixel_values"], image_grid_thw=prompt["image_grid_thw"],
                           use_cache=False).logits[0, P - 1:-1].float()       # [T, V]
            by_hand.append(torch.log_softmax(logits / 0.5, -1).gather(-1, o[:, None]).squeeze(-1))  # [T]
        expected = torch.stack(by_hand)                                        # [G, T]
        packed = anomalyr1.packed_logprobs(model, prompt, completions, temperature=0.5)  # [G, T]
        plain = anomalyr1.logprobs(model, prompt, completions, temperature=0.5)          # [G, T]
        at_one = anomalyr1.packed_logprobs(model, prompt, completions)                   # [G, T]
    assert (packed - expected).abs().max() < 1e-4 and (plain - expected).abs().max() < 1e-4
    assert (at_one - expected).abs().max() > 1e-2, "T = 0.5 and T = 1 should score differently"


def test_completion_mask_stops_after_first_end_of_turn():
    ids = torch.tensor([[5, 6, 9, 1, 1], [5, 9, 9, 1, 1], [5, 6, 7, 8, 4]])
    assert anomalyr1.completion_mask(ids, eos_id=9).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_tiny_model_speaks_the_format(tiny, synthetic):
    """Like an Instruct model, the warmed-up tiny model answers in <think>…</think><answer>…</answer>."""
    import data
    model, processor = tiny
    root, json_path = synthetic
    samples = [s for s in data.load_mmad(json_path, root) if s.options]
    random.Random(0).shuffle(samples)
    batch = anomalyr1.prepare(processor, samples[:32], shots=1)
    torch.manual_seed(0)
    _, texts = anomalyr1.generate(model, processor, batch, max_new_tokens=64, temperature=1.0)
    well_formed = sum(roam.parse(t).well_formed for t in texts) / len(texts)
    assert well_formed >= 0.85, texts[:4]
    vision = {processor.tokenizer.convert_tokens_to_ids(t) for t in anomalyr1.VISION_TOKENS}
    assert not any(t in vision for t in anomalyr1.generate(model, processor, batch, max_new_tokens=8)[0].flatten().tolist())


# ----------------------------------------------------------------------------- boxes, masks, CLI

def test_box_is_rescaled_from_model_input_to_original_image(tiny):
    _, processor = tiny
    # tiny budget 112×112 = 12544 px: 400×200 → scale √(80000/12544) ≈ 2.525 → floor to 28s: 140×56
    assert anomalyr1.model_input_size(processor, (400, 200)) == (140, 56)
    reply = '<think>there</think><answer>{"bbox_2d": [14, 14, 70, 42]}</answer>'
    # x · 400/140, y · 200/56
    assert anomalyr1.parse_box(reply, (140, 56), (400, 200)) == pytest.approx([40, 50, 200, 150])
    assert anomalyr1.box_to_input_frame([40, 50, 200, 150], (400, 200), (140, 56)) == pytest.approx([14, 14, 70, 42])
    assert anomalyr1.parse_box("<think>x</think><answer>B</answer>", (140, 56), (400, 200)) is None
    # a box beyond the image is clipped to it
    assert anomalyr1.parse_box('{"bbox_2d": [0, 0, 500, 500]}', (140, 56), (400, 200)) == [0, 0, 400, 200]


def test_box_mask_and_overlay(tmp_path):
    mask = anomalyr1.box_mask((50, 40), [10, 5, 19, 14])
    assert mask.getbbox() == (10, 5, 20, 15) and mask.getpixel((15, 10)) == 255 and mask.getpixel((0, 0)) == 0
    shown = anomalyr1.overlay(Image.new("RGB", (50, 40), (0, 0, 255)), [10, 5, 19, 14], mask)
    assert shown.getpixel((0, 0)) == (0, 0, 255) and shown.getpixel((15, 10))[0] > 100


def test_sam2_unavailable_is_said_clearly(tmp_path):
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed here")
    with pytest.raises(ImportError, match="SAM2 is unavailable.*drop --sam2"):
        anomalyr1.sam2_mask(Image.new("RGB", (8, 8)), [0, 0, 4, 4], str(tmp_path))


def test_cli_prints_a_reply(tiny, tmp_path, capsys):
    query, template = write_image(tmp_path / "q.png"), write_image(tmp_path / "t.png", colour=(9, 9, 9))
    assert anomalyr1.main(["--image", query, "--template", template, "--max-new-tokens", "64"]) == 0
    out = capsys.readouterr().out
    assert "<think>" in out or "answer:" in out
    assert "answer:" in out


def test_cli_box_question_writes_an_overlay(tiny, tmp_path, capsys):
    query = write_image(tmp_path / "q.png", size=(300, 200))
    out_png = tmp_path / "overlay.png"
    argv = ["--image", query, "--question", "Locate the defect in the object. Output its bounding box in JSON format.",
            "--options", "", "--max-new-tokens", "64", "--out", str(out_png)]
    assert anomalyr1.main(argv) == 0  # the warm-up's boxes have an area, so the tiny model's greedy box does too
    printed = capsys.readouterr()
    assert out_png.exists() and Image.open(out_png).size == (300, 200) and "box:" in printed.out


def test_warm_up_boxes_are_boxes_in_the_tiny_models_frame():
    rng = random.Random(0)
    replies = [warmup_example(rng)[2] for _ in range(600)]
    boxes = [roam.parse_bbox(roam.parse(r).answer) for r in replies if "bbox_2d" in r]
    assert len(boxes) > 50 and all(0 <= x1 < x2 <= 112 and 0 <= y1 < y2 <= 112 for x1, y1, x2, y2 in boxes)


def test_warm_up_replies_name_a_random_listed_option_by_its_text():
    rng = random.Random(0)
    examples = [warmup_example(rng) for _ in range(3000)]
    chosen = collections.Counter()
    for question, options, reply in examples:
        if not options:
            continue
        judged = [roam.judge(reply, letter, options) for letter in options]
        right = [letter for letter, j in zip(options, judged) if j["accuracy"] == 1.0]
        assert len(right) == 1, reply                      # the answer block reads as exactly one listed option
        assert judged[list(options).index(right[0])]["consistency"] == 1.0 and f"<answer>{right[0]}<" not in reply
        chosen[right[0], len(options)] += 1
    for k in (2, 4):                                       # random: every letter about equally often
        counts = [chosen[letter, k] for letter in "ABCD"[:k]]
        assert min(counts) > 0.8 * sum(counts) / k, counts


def test_sight_examples_answer_the_pictures_true_background_colour():
    rng = random.Random(0)
    for _ in range(20):
        image, question, options, reply = sight_example(rng)
        gold = next(letter for letter, text in options.items() if COLOURS[text] == image.getpixel((0, 0)))
        assert roam.judge(reply, gold, options)["roam"] == 1.0 and len(options) == 4


@pytest.mark.parametrize("argv, words", [(["--image", "{tmp}/missing.png"], "{tmp}/missing.png"),
                                         (["--image", "{tmp}/q.png", "--options", "yes or no"], "--options"),
                                         (["--template", "{tmp}/q.png"], "--image"),           # required
                                         (["--image", "{tmp}/q.png", "--max-new-tokens", "x"], "--max-new-tokens")])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys, argv, words):
    write_image(tmp_path / "q.png")
    with pytest.raises(SystemExit) as e:
        anomalyr1.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("anomalyr1.py: error: ") and err.count("\n") == 1
    assert words.format(tmp=tmp_path) in err


@pytest.mark.parametrize("reply, why", [
    ("<think>x</think><answer>A</answer>", "holds no bounding box"),
    ('<answer>{"bbox_2d": [40, 12, 40, 30]}</answer>', "has zero area"),      # what an untrained small model writes
    ('<answer>{"bbox_2d": [40, 12, 10, 30]}</answer>', "x1 < x2 and y1 < y2"),
    ('<answer>{"bbox_2d": [40, "a", 10]}</answer>', "is not four numbers"),
])
def test_why_no_box_names_the_reason(reply, why):
    assert anomalyr1.parse_box(reply, (112, 112), (224, 224)) is None
    assert why in roam.why_no_box(reply)
