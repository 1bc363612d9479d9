"""Bad inputs, tried as a demanding user would: every one must end the CLI with exit status 2 and exactly ONE
`error:` line on stderr that names the culprit (the file, folder or flag), never a traceback; for a sample of
cases the corrected command then runs.

Table-driven and in-process: each case calls a script's `main(argv)` (no subprocess per case), with capsys. Almost
every case fails before any model loads; they share one small MVTec-layout folder and one copy of the tiny model.
Add a case by writing a function decorated with @case that returns Case(main, argv, culprit[, fix]); `fix`
repairs what the case broke and returns the argv of the corrected command, which must then exit 0.
"""
import copy
import json
import os
import shutil
import struct
import zlib
from typing import Callable, NamedTuple

import numpy as np
import pytest
from PIL import Image

import anomalyr1
import data
import mvtec
import tiny


class Case(NamedTuple):
    main: Callable
    argv: list
    culprit: str                     # must appear in the one error line
    fix: Callable | None = None      # () -> argv of the corrected command (exit 0 expected)


CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def run_main(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:          # argparse and cli.user_errors exit; plain mains return the status
        return e.code


def assert_one_error_line(rc, err, culprit):
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1, (rc, err)
    assert str(culprit) in lines[0], (culprit, lines[0])


# ----------------------------------------------------------------------------------------- shared fixtures
def _png(path, seed, size=32, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)


def _mvtec(folder):
    """folder/cat/{train/good, test/good, test/crack, ground_truth/crack}: 6 tiny PNGs, MVTec-AD layout."""
    for i in range(2):
        _png(f"{folder}/cat/train/good/{i:03d}.png", i)
    _png(f"{folder}/cat/test/good/000.png", 10)
    _png(f"{folder}/cat/test/crack/000.png", 11)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 20:30] = 255
    os.makedirs(f"{folder}/cat/ground_truth/crack", exist_ok=True)
    Image.fromarray(mask).save(f"{folder}/cat/ground_truth/crack/000_mask.png")


class World(NamedTuple):
    root: str                        # data root: holds ds/ (MVTec layout)
    json: str                        # good questions for it
    records: dict
    model: str                       # the tiny model folder (never modified: cases copy it)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    root = base / "root"
    _mvtec(root / "ds")
    path = base / "good.json"
    records = mvtec.build(str(root / "ds"), str(path))
    return World(str(root), str(path), records, tiny.build_tiny())


def mmad(tmp, world, mutate=None, content=None):
    """Write the world's questions to tmp/q.json, changed in place by mutate(records) or replaced by
    content(records) (a str is written as is); return (path, fix) where fix rewrites the good questions there."""
    recs = copy.deepcopy(world.records)
    if mutate:
        mutate(recs)
    if content:
        recs = content(recs)
    path = tmp / "q.json"
    path.write_text(recs if isinstance(recs, str) else json.dumps(recs))

    def fix():
        path.write_text(json.dumps(world.records))
        return ["stats", path, "--root", world.root]
    return path, fix


QUERY = "ds/cat/test/crack/000.png"
NORMAL = "ds/cat/test/good/000.png"


def turn0(recs):
    return recs[QUERY]["conversation"][0]


def stats_case(tmp, world, mutate=None, culprit=None, content=None):
    path, fix = mmad(tmp, world, mutate, content)
    return Case(data.main, ["stats", path, "--root", world.root], culprit or "q.json", fix)


# ----------------------------------------------------------------------------------------- data.py stats: types
@case
def deep_json(tmp, w):
    return stats_case(tmp, w, content=lambda r: "[" * 200_000 + "]" * 200_000)


@case
def empty_object(tmp, w):
    return stats_case(tmp, w, content=lambda r: {})


@case
def top_level_list(tmp, w):
    return stats_case(tmp, w, content=lambda r: [r])


@case
def question_is_number(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(Question=12345))


@case
def question_empty(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(Question="  "))


@case
def option_value_number(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r)["Options"].update(B=7))


@case
def option_key_not_letter(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r)["Options"].update({"b)": "No."}))


@case
def options_list(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(Options=["Yes.", "No."]))


@case
def answer_number(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(Answer=1))


@case
def answer_not_an_option(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(Answer="E"))


@case
def type_is_list(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(type=["Anomaly Detection"]))


@case
def type_unknown(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).update(type="Vibes"))


@case
def grounding_box_nan(tmp, w):
    def mutate(r):
        grounding = [t for t in r[QUERY]["conversation"] if t["type"] == data.GROUNDING][0]
        grounding["Answer"] = '{"bbox_2d": [1, 2, NaN, 9]}'
    return stats_case(tmp, w, mutate)


@case
def record_is_string(tmp, w):
    return stats_case(tmp, w, lambda r: r.update({NORMAL: "not a record"}))


@case
def conversation_empty(tmp, w):
    return stats_case(tmp, w, lambda r: r[NORMAL].update(conversation=[]))


@case
def turn_is_string(tmp, w):
    return stats_case(tmp, w, lambda r: r[NORMAL]["conversation"].append("Is it broken?"))


@case
def turn_lacks_answer(tmp, w):
    return stats_case(tmp, w, lambda r: turn0(r).pop("Answer"))


@case
def templates_string(tmp, w):
    return stats_case(tmp, w, lambda r: r[QUERY].update(similar_templates="ds/cat/train/good/000.png"))


@case
def templates_numbers(tmp, w):
    return stats_case(tmp, w, lambda r: r[QUERY].update(random_templates=[1, 2]))


@case
def mask_path_number(tmp, w):
    return stats_case(tmp, w, lambda r: r[QUERY].update(mask_path=5))


# ----------------------------------------------------------------------------------------- data.py stats: files
@case
def image_key_is_folder(tmp, w):
    return stats_case(tmp, w, lambda r: r.update({"ds/cat/test/good": r[NORMAL]}), "ds/cat/test/good is a folder")


@case
def empty_image_key(tmp, w):
    return stats_case(tmp, w, lambda r: r.update({"": r[NORMAL]}), "empty path")


@case
def image_key_with_newline(tmp, w):
    """Shown as repr: the error stays one line."""
    return stats_case(tmp, w, lambda r: r.update({"ds/cat\nx.png": r[NORMAL]}), "'ds/cat\\nx.png' missing")


@case
def root_is_file(tmp, w):
    path, fix = mmad(tmp, w)
    return Case(data.main, ["stats", path, "--root", path], "is not a folder", lambda: ["stats", path, "--root", w.root])


@case
def template_missing(tmp, w):
    return stats_case(tmp, w, lambda r: r[QUERY].update(similar_templates=["ds/cat/train/good/099.png"]),
                      "099.png missing")


@case
def key_with_dotdot(tmp, w):
    return stats_case(tmp, w, lambda r: r.update({"ds/../ds/cat/test/good/000.png": r[NORMAL]}), "escapes the root")


@case
def key_absolute(tmp, w):
    return stats_case(tmp, w, lambda r: r.update({os.path.join(w.root, NORMAL): r[NORMAL]}), "escapes the root")


def _private_root(tmp, w):
    """A copy of the world's root the case may break (symlinks, corrupt files)."""
    root = tmp / "root"
    shutil.copytree(w.root, root)
    return root


@case
def symlink_image_out_of_root(tmp, w):
    root = _private_root(tmp, w)
    _png(tmp / "outside.png", 3)
    os.symlink(tmp / "outside.png", root / "ds/cat/test/good/link.png")
    path, _ = mmad(tmp, w, lambda r: r.update({"ds/cat/test/good/link.png": r[NORMAL]}))

    def fix():
        os.remove(root / "ds/cat/test/good/link.png")
        shutil.copy(tmp / "outside.png", root / "ds/cat/test/good/link.png")    # a real file inside the root
        return ["stats", path, "--root", root]
    return Case(data.main, ["stats", path, "--root", root], "link.png escapes the root", fix)


@case
def symlink_in_mask_folder_out_of_root(tmp, w):
    """MVTec-LOCO: mask_path is a folder of PNGs; a file in it linking out of the root is refused too."""
    root = _private_root(tmp, w)
    os.makedirs(root / "ds/cat/ground_truth/crack/000")
    shutil.copy(root / "ds/cat/ground_truth/crack/000_mask.png", root / "ds/cat/ground_truth/crack/000/000.png")
    shutil.copy(root / "ds/cat/ground_truth/crack/000_mask.png", tmp / "secret.png")
    os.symlink(tmp / "secret.png", root / "ds/cat/ground_truth/crack/000/001.png")
    path, _ = mmad(tmp, w, lambda r: r[QUERY].update(mask_path="ds/cat/ground_truth/crack/000"))

    def fix():
        os.remove(root / "ds/cat/ground_truth/crack/000/001.png")
        return ["stats", path, "--root", root]
    return Case(data.main, ["stats", path, "--root", root], "001.png in it resolves to", fix)


@case
def mask_folder_without_pngs(tmp, w):
    root = _private_root(tmp, w)
    os.makedirs(root / "ds/cat/ground_truth/crack/000")
    path, _ = mmad(tmp, w, lambda r: r[QUERY].update(mask_path="ds/cat/ground_truth/crack/000"))
    return Case(data.main, ["stats", path, "--root", root], "ds/cat/ground_truth/crack/000 is a mask folder")


@case
def truncated_png(tmp, w):
    root = _private_root(tmp, w)
    p = root / NORMAL
    p.write_bytes(p.read_bytes()[:60])
    path, _ = mmad(tmp, w, None)
    return Case(data.main, ["stats", path, "--root", root], f"{NORMAL} cannot be decoded")


def _bomb_png(path, width=20_000, height=10_000):
    """A valid PNG header claiming 200 MP (over PIL's 179 MP bomb limit) and a few bytes of pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@case
def decompression_bomb(tmp, w):
    root = _private_root(tmp, w)
    _bomb_png(root / NORMAL)
    path, _ = mmad(tmp, w, None)
    return Case(data.main, ["stats", path, "--root", root], f"{NORMAL} too large")


@case
def json_not_utf8(tmp, w):
    path = tmp / "q.json"
    path.write_bytes(b'{"\xff\xfe": 1}')
    return Case(data.main, ["stats", path, "--root", w.root], "q.json")


@case
def json_malformed(tmp, w):
    return stats_case(tmp, w, content=lambda r: json.dumps(r)[:-5])


@case
def json_missing(tmp, w):
    return Case(data.main, ["stats", tmp / "nothere.json", "--root", w.root], "nothere.json")


@case
def json_is_folder(tmp, w):
    return Case(data.main, ["stats", tmp, "--root", w.root], str(tmp))


@case
def root_missing(tmp, w):
    path, _ = mmad(tmp, w, None)
    return Case(data.main, ["stats", path, "--root", tmp / "nowhere"], "nowhere",
                lambda: ["stats", path, "--root", w.root])


# ----------------------------------------------------------------------------------------- data.py build
@case
def build_out_is_folder(tmp, w):
    os.makedirs(tmp / "outdir")
    return Case(data.main, ["build", os.path.join(w.root, "ds"), "--out", tmp / "outdir"], "outdir",
                lambda: ["build", os.path.join(w.root, "ds"), "--out", tmp / "outdir" / "questions.json"])


@case
def build_out_under_a_file(tmp, w):
    (tmp / "afile").write_text("x")
    return Case(data.main, ["build", os.path.join(w.root, "ds"), "--out", tmp / "afile" / "q.json"], "afile")


@case
def build_no_mvtec_layout(tmp, w):
    os.makedirs(tmp / "photos" / "holiday")
    _png(tmp / "photos" / "holiday" / "a.png", 1)
    return Case(data.main, ["build", tmp / "photos", "--out", tmp / "q.json"], "photos",
                lambda: (_mvtec(tmp / "photos"), ["build", tmp / "photos", "--out", tmp / "q.json"])[1])


@case
def build_root_is_file(tmp, w):
    return Case(data.main, ["build", w.json, "--out", tmp / "q.json"], w.json)


@case
def build_root_missing(tmp, w):
    return Case(data.main, ["build", tmp / "nowhere", "--out", tmp / "q.json"], "nowhere")


@case
def build_corrupt_test_image(tmp, w):
    root = _private_root(tmp, w)
    p = root / "ds/cat/test/good/000.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n not really")

    def fix():
        _png(p, 10)
        return ["build", root / "ds", "--out", tmp / "q.json"]
    return Case(data.main, ["build", root / "ds", "--out", tmp / "q.json"], "000.png", fix)


@case
def build_loco_masks_of_two_sizes(tmp, w):
    """MVTec-LOCO: a mask folder is the union of its PNGs, which must share the image's size."""
    root = _private_root(tmp, w)
    gt = root / "ds/cat/ground_truth/crack"
    os.remove(gt / "000_mask.png")
    os.makedirs(gt / "000")
    Image.new("L", (32, 32), 255).save(gt / "000/000.png")
    Image.new("L", (16, 16), 255).save(gt / "000/001.png")

    def fix():
        os.remove(gt / "000/001.png")
        return ["build", root / "ds", "--out", tmp / "q.json"]
    return Case(data.main, ["build", root / "ds", "--out", tmp / "q.json"], "ground_truth/crack/000", fix)


@case
def build_name_with_slash(tmp, w):
    return Case(data.main, ["build", os.path.join(w.root, "ds"), "--out", tmp / "q.json", "--name", "a/b"], "--name")


@case
def mvtec_run_as_a_script(tmp, w):
    """Printed nothing and exited 0: mvtec.py is build's library, and the line names the command that runs it."""
    return Case(mvtec.main, [tmp], "python data.py build ROOT --out")


# ----------------------------------------------------------------------------------------- anomalyr1.py images
def ask(w, image, *extra):
    return ["--image", image, "--model", w.model, "--max-new-tokens", "4", *extra]


@case
def image_missing(tmp, w):
    return Case(anomalyr1.main, ask(w, tmp / "nope.png"), "nope.png")


@case
def image_is_folder(tmp, w):
    return Case(anomalyr1.main, ask(w, tmp), str(tmp))


@case
def image_corrupt(tmp, w):
    (tmp / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\0garbage")
    return Case(anomalyr1.main, ask(w, tmp / "bad.png"), "bad.png")


@case
def template_corrupt(tmp, w):
    (tmp / "t.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--template", tmp / "t.jpg"), "t.jpg")


@case
def image_float_tiff(tmp, w):
    Image.fromarray(np.ones((8, 8), np.float32)).save(tmp / "depth.tiff")
    return Case(anomalyr1.main, ask(w, tmp / "depth.tiff"), "depth.tiff")


@case
def image_bomb(tmp, w):
    _bomb_png(tmp / "huge.png")
    return Case(anomalyr1.main, ask(w, tmp / "huge.png"), "huge.png")


@case
def options_unreadable(tmp, w):
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--options", "yes or no"), "--options")


@case
def options_repeated_letter(tmp, w):
    """Was accepted: the second A replaced the first, and the answer printed was 'A. No.'."""
    argv = ask(w, os.path.join(w.root, NORMAL))
    return Case(anomalyr1.main, argv + ["--options", "A=Yes.,A=No."], "--options 'A=Yes.,A=No.': repeats the letter(s) A",
                lambda: argv + ["--options", "A=Yes.,B=No."])


# ----------------------------------------------------------------------------------------- model folders
def model_case(tmp, w, breaks, culprit, main=anomalyr1.main, argv=None, fixable=False):
    """A copy of the tiny model broken by breaks(folder); fix restores the copy."""
    folder = tmp / "model"
    shutil.copytree(w.model, folder)
    breaks(folder)

    def fix():
        shutil.rmtree(folder)
        shutil.copytree(w.model, folder)
        return ask(w, os.path.join(w.root, NORMAL))[:2] + ["--model", folder, "--max-new-tokens", "4"]
    argv = argv(folder) if argv else ["--image", os.path.join(w.root, NORMAL), "--model", folder]
    return Case(main, argv, culprit.format(folder=folder), fix if fixable else None)


def _truncate(path, keep=0.5):
    b = path.read_bytes()
    path.write_bytes(b[:int(len(b) * keep)])


@case
def model_missing(tmp, w):
    return Case(anomalyr1.main, ["--image", os.path.join(w.root, NORMAL), "--model", tmp / "qwen"], "qwen")


@case
def model_is_file(tmp, w):
    return Case(anomalyr1.main, ["--image", os.path.join(w.root, NORMAL), "--model", w.json], w.json)


@case
def model_pickle_only(tmp, w):
    return model_case(tmp, w, lambda f: os.rename(f / "model.safetensors", f / "pytorch_model.bin"),
                      "{folder}: holds only pickle weights")


@case
def model_truncated_safetensors(tmp, w):
    return model_case(tmp, w, lambda f: _truncate(f / "model.safetensors"), "{folder}/model.safetensors",
                      fixable=True)


@case
def model_zero_byte_safetensors(tmp, w):
    return model_case(tmp, w, lambda f: (f / "model.safetensors").write_bytes(b""), "{folder}/model.safetensors")


@case
def model_broken_config(tmp, w):
    return model_case(tmp, w, lambda f: _truncate(f / "config.json"), "{folder}/config.json", fixable=True)


@case
def model_config_is_list(tmp, w):
    return model_case(tmp, w, lambda f: (f / "config.json").write_text("[]"), "{folder}/config.json")


@case
def model_other_architecture(tmp, w):
    def llama(f):
        config = json.loads((f / "config.json").read_text())
        (f / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    return model_case(tmp, w, llama, "{folder}/config.json")


@case
def model_no_config(tmp, w):
    return model_case(tmp, w, lambda f: os.remove(f / "config.json"), "{folder}")


@case
def model_is_a_run_folder(tmp, w):  # grpo.py's --out, not its checkpoint: the error names final/
    (tmp / "run" / "final").mkdir(parents=True)
    return Case(anomalyr1.main, ["--image", os.path.join(w.root, NORMAL), "--model", tmp / "run"],
                os.path.join(tmp / "run", "final"))


@case
def model_no_tokenizer(tmp, w):
    return model_case(tmp, w, lambda f: os.remove(f / "tokenizer.json"), "{folder}: no tokenizer")


@case
def model_broken_tokenizer(tmp, w):
    return model_case(tmp, w, lambda f: _truncate(f / "tokenizer.json"), "{folder}/tokenizer.json")


@case
def model_no_processor_config(tmp, w):
    def drop(f):
        for name in ("processor_config.json", "preprocessor_config.json"):
            if os.path.exists(f / name):
                os.remove(f / name)
    return model_case(tmp, w, drop, "{folder}: no image processor config")


@case
def model_index_names_missing_shard(tmp, w):
    def shard(f):
        os.remove(f / "model.safetensors")
        (f / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    return model_case(tmp, w, shard, "{folder}/model-00001-of-00002.safetensors")


@case
def model_no_chat_template(tmp, w):
    def drop(f):
        for name in ("chat_template.jinja", "chat_template.json"):
            if os.path.exists(f / name):
                os.remove(f / name)
        config = json.loads((f / "tokenizer_config.json").read_text())
        config.pop("chat_template", None)
        (f / "tokenizer_config.json").write_text(json.dumps(config))
    return model_case(tmp, w, drop, "{folder}: no chat template")


@case
def eval_truncated_model(tmp, w):
    """The same check reaches eval.py (and grpo.py below): load() itself raises the one line."""
    import eval as ev
    return model_case(tmp, w, lambda f: _truncate(f / "model.safetensors"), "{folder}/model.safetensors", ev.main,
                      lambda f: ["--model", f, "--data", w.json, "--root", w.root, "--split", "all",
                                 "--out", tmp / "eval"])


@case
def grpo_pickle_only_model(tmp, w):
    import grpo
    return model_case(tmp, w, lambda f: os.rename(f / "model.safetensors", f / "pytorch_model.bin"),
                      "{folder}: holds only pickle weights", grpo.main,
                      lambda f: ["--model", f, "--data", w.json, "--root", w.root, "--out", tmp / "run", "--steps", 1])


# ----------------------------------------------------------------------------------------- the same json via eval/grpo
def eval_argv(w, path, tmp):
    return ["--model", w.model, "--data", path, "--root", w.root, "--split", "all", "--out", tmp / "eval",
            "--limit", 1, "--max-new-tokens", 4]


def grpo_argv(w, path, tmp):
    return ["--data", path, "--root", w.root, "--out", tmp / "run", "--steps", 1]


@case
def eval_empty_object(tmp, w):
    """Used to write empty results; now refused before any model loads, and the corrected command runs."""
    import eval as ev
    path, fix = mmad(tmp, w, content=lambda r: {})
    return Case(ev.main, eval_argv(w, path, tmp), "q.json", lambda: (fix(), eval_argv(w, path, tmp))[1])


@case
def eval_deep_json(tmp, w):
    import eval as ev
    path, _ = mmad(tmp, w, content=lambda r: "[" * 200_000 + "]" * 200_000)
    return Case(ev.main, eval_argv(w, path, tmp), "q.json")


@case
def eval_option_value_number(tmp, w):
    import eval as ev
    path, _ = mmad(tmp, w, lambda r: turn0(r)["Options"].update(A=None))
    return Case(ev.main, eval_argv(w, path, tmp), "q.json")


@case
def grpo_deep_json(tmp, w):
    import grpo
    path, _ = mmad(tmp, w, content=lambda r: "{" + '"a":{' * 200_000 + "}" * 200_001)
    return Case(grpo.main, grpo_argv(w, path, tmp), "q.json")


@case
def grpo_question_number(tmp, w):
    """Used to pass validation and fail mid-run with a TypeError."""
    import grpo
    path, _ = mmad(tmp, w, lambda r: turn0(r).update(Question=12345))
    return Case(grpo.main, grpo_argv(w, path, tmp), "q.json")


# ----------------------------------------------------------------------------------------- eval.py flags and folders
def eval_flag_case(tmp, w, flag, value, good=None):
    """eval.py with one flag wrong: refused before any model loads; `good` given, the corrected command runs."""
    import eval as ev
    argv = eval_argv(w, w.json, tmp)
    bad = argv + [flag, value]
    return Case(ev.main, bad, f"{flag} {value}", (lambda: argv + [flag, good]) if good is not None else None)


@case
def eval_failed_run_does_not_block(tmp, w):
    """A failed eval (bad --model) used to leave setting.json, and the corrected command was refused
    ("holds answers for another setting") though nothing had been answered."""
    import eval as ev
    argv = eval_argv(w, w.json, tmp)
    bad = argv + ["--model", tmp / "no-model"]
    return Case(ev.main, bad, "no-model", lambda: argv)


@case
def eval_device_tpu(tmp, w):
    return eval_flag_case(tmp, w, "--device", "tpu", "cpu")


@case
def eval_device_absent_gpu(tmp, w):
    return eval_flag_case(tmp, w, "--device", "cuda:99")


@case
def eval_batch_size_zero(tmp, w):
    """Was "range() arg 3 must not be zero", after the model loaded."""
    return eval_flag_case(tmp, w, "--batch-size", 0)


@case
def eval_limit_negative(tmp, w):
    return eval_flag_case(tmp, w, "--limit", -1)


@case
def eval_max_new_tokens_zero(tmp, w):
    return eval_flag_case(tmp, w, "--max-new-tokens", 0)


@case
def eval_out_is_file(tmp, w):
    import eval as ev
    (tmp / "eval").write_text("not a folder")
    return Case(ev.main, eval_argv(w, w.json, tmp), f"--out {tmp / 'eval'}:",
                lambda: (os.remove(tmp / "eval"), eval_argv(w, w.json, tmp))[1])


@case
def eval_setting_unreadable_beside_answers(tmp, w):
    """Answers whose setting.json is torn cannot be matched to a setting: refused, naming the file."""
    import eval as ev
    os.makedirs(tmp / "eval")
    (tmp / "eval" / "answers.jsonl").write_text(json.dumps(
        {"image": NORMAL, "question": "q", "question_type": "Anomaly Detection"}) + "\n")
    (tmp / "eval" / "setting.json").write_text('{"model": "ti')
    return Case(ev.main, eval_argv(w, w.json, tmp), "setting.json")


RESULTS = {"ds": {"Anomaly Detection": 50.0, "Average": 50.0}, "Average": {"Anomaly Detection": 50.0, "Average": 50.0}}


def compare_case(tmp, content):
    """eval.py --compare on one bad results.json beside a good one; the fix writes a good one in its place."""
    import eval as ev
    (tmp / "good").mkdir()
    (tmp / "good" / "results.json").write_text(json.dumps(RESULTS))
    path = tmp / "bad" / "results.json"
    path.parent.mkdir()
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())

    def fix():
        path.write_text(json.dumps(RESULTS))
        return ["--compare", tmp / "good" / "results.json", path]
    return Case(ev.main, ["--compare", tmp / "good" / "results.json", path], "bad/results.json", fix)


@case
def compare_missing(tmp, w):
    return compare_case(tmp, None)


@case
def compare_not_json(tmp, w):
    return compare_case(tmp, b"| Model | Average |")


@case
def compare_not_utf8(tmp, w):
    return compare_case(tmp, b"\xff\xfe\x00{")


@case
def compare_deep_json(tmp, w):
    return compare_case(tmp, b"[" * 200_000 + b"]" * 200_000)


@case
def compare_list(tmp, w):
    return compare_case(tmp, [RESULTS])


@case
def compare_average_is_number(tmp, w):
    return compare_case(tmp, {**RESULTS, "Average": 50.0})


@case
def compare_dataset_row_is_list(tmp, w):
    return compare_case(tmp, {**RESULTS, "ds": [50.0]})


@case
def compare_accuracy_is_string(tmp, w):
    return compare_case(tmp, {**RESULTS, "ds": {"Anomaly Detection": "50%"}})


@case
def compare_folder(tmp, w):
    import eval as ev
    (tmp / "good").mkdir()
    (tmp / "good" / "results.json").write_text(json.dumps(RESULTS))
    return Case(ev.main, ["--compare", tmp / "good"], "good: is a folder",
                lambda: ["--compare", tmp / "good" / "results.json"])


# ----------------------------------------------------------------------------------------- data.py synth, --seed
@case
def synth_out_is_file(tmp, w):
    (tmp / "synth").write_text("x")
    return Case(data.main, ["synth", tmp / "synth"], "synth: is a file")


@case
def synth_out_under_a_file(tmp, w):
    (tmp / "afile").write_text("x")
    return Case(data.main, ["synth", tmp / "afile" / "synth"], "afile/synth")


@case
def synth_seed_negative(tmp, w):
    return Case(data.main, ["synth", tmp / "synth", "--seed", -1], "--seed -1")


@case
def build_seed_negative(tmp, w):
    argv = ["build", os.path.join(w.root, "ds"), "--out", tmp / "q.json"]
    return Case(data.main, argv + ["--seed", -1], "--seed -1", lambda: argv + ["--seed", 1])


# ----------------------------------------------------------------------------------------- anomalyr1.py, plan.py flags
@case
def ask_max_new_tokens_zero(tmp, w):
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL))[:-2] + ["--max-new-tokens", 0],
                "--max-new-tokens 0")


@case
def ask_out_is_folder(tmp, w):
    """Refused before the model loads (it used to answer first, then fail to draw)."""
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--out", tmp), f"--out {tmp}:")


@case
def ask_sam2_missing(tmp, w):
    """Was refused only after the answer was generated, as "SAM2 is unavailable" with an HFValidationError."""
    argv = ask(w, os.path.join(w.root, NORMAL), "--options", "", "--out", tmp / "o.png")
    return Case(anomalyr1.main, argv + ["--sam2", tmp / "nope"], f"--sam2 {tmp / 'nope'}: not a folder")


@case
def plan_gpus_zero(tmp, w):
    """Was a ZeroDivisionError traceback (grpo.py --plan calls the same planner)."""
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--gpus", 0], "--gpus 0", lambda: ["--model", "tiny-config"])


@case
def plan_logprob_batch_zero(tmp, w):
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--logprob-batch", 0], "--logprob-batch 0")


@case
def plan_image_size_negative(tmp, w):
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--image-size", -1, 800], "--image-size")


# ----------------------------------------------------------------------------------------- grpo.py flags, run folders
SMALL_RUN = ["--prompts-per-step", 2, "--group-size", 2, "--max-completion", 8]


def grpo_flag_case(tmp, w, flag, value, good=None):
    """grpo.py with one flag wrong: refused before any model loads, naming the flag and the value given; `good`
    given, the corrected command trains a step."""
    import grpo
    argv = grpo_argv(w, w.json, tmp) + SMALL_RUN
    return Case(grpo.main, argv + [flag, value], f"{flag} {value}", (lambda: argv + [flag, good]) if good else None)


@case
def grpo_eval_every_negative(tmp, w):
    """Was refused only after --out was locked and the tiny model and synthetic set were built (minutes, cold)."""
    return grpo_flag_case(tmp, w, "--eval-every", -1, good=0)


@case
def grpo_eval_questions_zero(tmp, w):
    return grpo_flag_case(tmp, w, "--eval-questions", 0)


@case
def grpo_log_samples_negative(tmp, w):
    return grpo_flag_case(tmp, w, "--log-samples", -1)


@case
def grpo_lr_inf(tmp, w):
    """Was accepted: every final weight NaN, and `skipped: 0`."""
    return grpo_flag_case(tmp, w, "--lr", "inf")


@case
def grpo_lr_nan(tmp, w):
    return grpo_flag_case(tmp, w, "--lr", "nan")


@case
def grpo_lr_zero(tmp, w):
    return grpo_flag_case(tmp, w, "--lr", 0)


@case
def grpo_beta_negative(tmp, w):
    return grpo_flag_case(tmp, w, "--beta", -1)


@case
def grpo_clip_eps_negative(tmp, w):
    return grpo_flag_case(tmp, w, "--clip-eps", -0.5)


@case
def grpo_clip_eps_one(tmp, w):
    """1 - ε <= 0: the lower clip no ratio can reach."""
    return grpo_flag_case(tmp, w, "--clip-eps", 1)


@case
def grpo_max_grad_norm_negative(tmp, w):
    return grpo_flag_case(tmp, w, "--max-grad-norm", -1)


@case
def grpo_logprob_batch_above_g(tmp, w):
    """Was capped at G without a word (the user asked for bigger forwards than a group)."""
    return grpo_flag_case(tmp, w, "--logprob-batch", 3)  # SMALL_RUN's G = 2


@case
def plan_logprob_batch_above_g(tmp, w):
    """Was planned as P + 16·T tokens per forward, a forward grpo.py never runs."""
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--group-size", 8, "--logprob-batch", 16], "--logprob-batch 16")


@case
def grpo_logprob_batch_zero(tmp, w):
    """Was read as "not given" (G)."""
    return grpo_flag_case(tmp, w, "--logprob-batch", 0)


@case
def grpo_temperature_zero(tmp, w):
    """Was a transformers ValueError mid-run; greedy decoding would give G identical completions anyway."""
    return grpo_flag_case(tmp, w, "--temperature", 0, good="0.7")


@case
def grpo_seed_negative(tmp, w):
    """Was numpy's "expected non-negative integer", naming no flag."""
    return grpo_flag_case(tmp, w, "--seed", -1)


@case
def grpo_n_images_zero(tmp, w):
    """Was "no training questions", blaming the json."""
    return grpo_flag_case(tmp, w, "--n-images", 0)


@case
def grpo_out_is_file(tmp, w):
    """Was refused only after the model loaded."""
    import grpo
    (tmp / "run").write_text("not a folder")
    argv = grpo_argv(w, w.json, tmp) + SMALL_RUN
    return Case(grpo.main, argv, f"--out {tmp / 'run'}: is a file", lambda: (os.remove(tmp / "run"), argv)[1])


@case
def grpo_out_under_a_file(tmp, w):
    import grpo
    (tmp / "afile").write_text("x")
    return Case(grpo.main, ["--data", w.json, "--root", w.root, "--out", tmp / "afile" / "run"], "afile/run")


@case
def grpo_plan_gpus_zero(tmp, w):
    """Was a ZeroDivisionError traceback."""
    import grpo
    return Case(grpo.main, ["--plan", "--gpus", 0], "--gpus 0", lambda: ["--plan", "--gpus", 1])


@case
def grpo_resume_torn_trainer_state(tmp, w):
    """Was "error: Expecting value: line 2 column 1", naming no file."""
    import grpo
    os.makedirs(tmp / "run" / "step-000001")
    (tmp / "run" / "step-000001" / "trainer_state.json").write_text('{"step": 1,\n')
    return Case(grpo.main, ["--resume", tmp / "run"], "step-000001/trainer_state.json")


@case
def grpo_resume_before_the_first_save(tmp, w):
    """A run that crashed before its first checkpoint: nothing to resume, and the line says to start it over."""
    import grpo
    os.makedirs(tmp / "run")
    (tmp / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    return Case(grpo.main, ["--resume", tmp / "run"], "without --resume")


# ----------------------------------------------------------------------------------------- the harness
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(name, world, tmp_path, capsys):
    c = CASES[name](tmp_path, world)
    rc = run_main(c.main, c.argv)
    out, err = capsys.readouterr()
    assert_one_error_line(rc, err, c.culprit)
    assert not [p for p in tmp_path.rglob("*.tmp")], "a failed command left a .tmp file behind"
    if c.fix:
        argv = c.fix()
        rc = run_main(c.main, argv)
        out, err = capsys.readouterr()
        assert rc in (0, None) and "error:" not in err, (argv, err)


def test_enough_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_build_leaves_no_tmp_when_the_write_fails(world, tmp_path, monkeypatch, failure):
    """A full disk (one line naming --out) or Ctrl-C while writing: no .tmp file, nothing at --out."""
    def fail(*args, **kwargs):
        raise failure
    monkeypatch.setattr(mvtec.os, "replace", fail)
    out = tmp_path / "q.json"
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else ValueError) as e:
        mvtec.build(os.path.join(world.root, "ds"), str(out))
    assert os.listdir(tmp_path) == []
    if not isinstance(failure, KeyboardInterrupt):
        assert str(e.value).startswith(f"--out {out}: cannot write it (No space left on device)")
