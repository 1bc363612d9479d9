"""Bad question files, images and data folders: one error line each, exit 2 (see badinputs.py)."""
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import anomalyr1
import data
import mvtec
from badinputs import (NORMAL, QUERY, Case, ask, check, make_world, mmad, mvtec_folder, png, registry, stats_case,
                       turn0)

CASES = {}
case = registry(CASES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory)


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
    png(tmp / "outside.png", 3)
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
def truncatedpng(tmp, w):
    root = _private_root(tmp, w)
    p = root / NORMAL
    p.write_bytes(p.read_bytes()[:60])
    path, _ = mmad(tmp, w, None)
    return Case(data.main, ["stats", path, "--root", root], f"{NORMAL} cannot be decoded")


def _bombpng(path, width=20_000, height=10_000):
    """A valid PNG header claiming 200 MP (over PIL's 179 MP bomb limit) and a few bytes of pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@case
def decompression_bomb(tmp, w):
    root = _private_root(tmp, w)
    _bombpng(root / NORMAL)
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
    png(tmp / "photos" / "holiday" / "a.png", 1)
    return Case(data.main, ["build", tmp / "photos", "--out", tmp / "q.json"], "photos",
                lambda: (mvtec_folder(tmp / "photos"), ["build", tmp / "photos", "--out", tmp / "q.json"])[1])


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
        png(p, 10)
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
    _bombpng(tmp / "huge.png")
    return Case(anomalyr1.main, ask(w, tmp / "huge.png"), "huge.png")


@case
def options_unreadable(tmp, w):
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--options", "yes or no"), "--options")


@case
def options_repeated_letter(tmp, w):
    """Was accepted: the second A replaced the first, and the answer printed was 'A. No.'."""
    argv = ask(w, os.path.join(w.root, NORMAL))
    return Case(anomalyr1.main, argv + ["--options", "A=Yes.,A=No."],
                "--options 'A=Yes.,A=No.': repeats the letter(s) A",
                lambda: argv + ["--options", "A=Yes.,B=No."])


@case
def options_one_empty(tmp, w):
    """'A=,B=No.' was accepted: the prompt listed an option with no text."""
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--options", "A=,B=No."), "have no text")


@case
def options_only_one(tmp, w):
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--options", "A=Yes."), "one option")


@case
def image_thin_strip(tmp, w):
    """A 3000x10 image was a bare 'absolute aspect ratio must be smaller than 200' from the image processor, after
    the model loaded, naming no file."""
    Image.new("RGB", (3000, 10)).save(tmp / "strip.png")
    return Case(anomalyr1.main, ask(w, tmp / "strip.png"), "strip.png: has an aspect ratio over 200:1",
                lambda: ask(w, os.path.join(w.root, NORMAL)))


@case
def json_image_thin_strip(tmp, w):
    """The same image in a json: grpo.py used to train until a rollout met it, then stop with a traceback."""
    root = _private_root(tmp, w)
    Image.new("RGB", (3000, 10)).save(root / NORMAL)
    path, _ = mmad(tmp, w, None)
    return Case(data.main, ["stats", path, "--root", root], f"{NORMAL} has an aspect ratio over 200:1")


@case
def question_longer_than_the_model_takes(tmp, w):
    """A 100k-token question used to take all the memory of the machine (the OOM killer ended eval.py after a
    minute at 24 GB); the tiny model takes 8192 positions."""
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--question", "Is there a defect? " * 3000),
                "more than the model takes (8192)")


# ----------------------------------------------------------------------------------------- the harness
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(name, world, tmp_path, capsys):
    check(CASES[name](tmp_path, world), tmp_path, capsys)


def test_enough_cases():
    assert len(CASES) >= 30


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
