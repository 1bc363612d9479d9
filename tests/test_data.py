"""data.py: synthetic set, MVTec-layout -> MMAD questions, loading/validation, few-shot split, CLI."""
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import mvtec  # noqa: E402
import synth  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def _pixels(path):
    with Image.open(path) as im:
        return im.size, im.mode, np.asarray(im)


def _hashes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, folder)] = hashlib.sha256(_read(p)).hexdigest()
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Synthetic set (seed 0) built into questions: (data root, json path, loaded samples)."""
    root = tmp_path_factory.mktemp("synth")
    synth.synth(str(root / "synth"), seed=0)
    js = str(root / "questions.json")
    mvtec.build(str(root / "synth"), js)
    return str(root), js, data.load_mmad(js, str(root))


def _save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


def _img(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3))


def _box(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


# ---------------------------------------------------------------- synth
def test_synth_deterministic_for_a_seed(built, tmp_path):
    root, js, _ = built
    # ensure_synthetic runs synth(seed=0) + build(seed=0) into a cache: same bytes as the fixture's.
    umask = os.umask(0o027)          # a group-shared cache: the published folder follows the umask, not 0700
    try:
        cache_root, cache_js = synth.ensure_synthetic(str(tmp_path / "cache"))
    finally:
        os.umask(umask)
    assert cache_root == str(tmp_path / "cache" / "synth-v1")
    assert stat.S_IMODE(os.stat(cache_root).st_mode) == 0o750
    assert _hashes(os.path.join(cache_root, "synth")) == _hashes(os.path.join(root, "synth"))
    assert _read(cache_js) == _read(js)
    assert not [f for f in os.listdir(tmp_path / "cache") if f.startswith(".synth")]  # no temp folder left
    mtime = os.path.getmtime(cache_js)
    assert synth.ensure_synthetic(str(tmp_path / "cache")) == (cache_root, cache_js)  # cached, not rebuilt
    assert os.path.getmtime(cache_js) == mtime
    other = _hashes(synth.synth(str(tmp_path / "seed1"), seed=1))
    same = _hashes(os.path.join(root, "synth"))
    assert other.keys() == same.keys()
    assert sum(other[k] != same[k] for k in same if k.endswith(".png")) > 0.9 * len(same)


def test_synth_layout_and_masks(built):
    root = os.path.join(built[0], "synth")
    cats = sorted(os.listdir(root))
    assert len(cats) >= 4
    for cat in cats:
        defects = [d for d in os.listdir(os.path.join(root, cat, "test")) if d != "good"]
        assert len(defects) >= 3
        assert len(os.listdir(os.path.join(root, cat, "train", "good"))) >= 10
        assert len(os.listdir(os.path.join(root, cat, "test", "good"))) >= 4
        for d in defects:
            files = sorted(os.listdir(os.path.join(root, cat, "test", d)))
            assert len(files) >= 4
            for f in files:
                size, mode, _ = _pixels(os.path.join(root, cat, "test", d, f))
                msize, mmode, a = _pixels(os.path.join(root, cat, "ground_truth", d, f[:-4] + "_mask.png"))
                assert size == msize == (224, 224) and mode == "RGB" and mmode == "L"
                assert set(np.unique(a)) == {0, 255}


@pytest.mark.parametrize("cat", sorted(synth.SYNTH_CATEGORIES))
def test_synth_defects_visible_and_confined_to_mask(cat):
    # The drawers paint the normal object first, then the defect: with the same RNG state the
    # normal and defective images differ exactly inside the mask, and clearly so.
    draw, defects = synth.SYNTH_CATEGORIES[cat]
    for defect in defects:
        for seed in range(3):
            normal, none = draw(np.random.default_rng(seed), None)
            bad, mask = draw(np.random.default_rng(seed), defect)
            assert none is None and mask.sum() >= 20, (cat, defect, seed)
            diff = np.abs(bad - normal).mean(-1)                      # [224, 224]
            assert diff[~mask].max() == 0, (cat, defect)
            assert diff[mask].mean() > 30, (cat, defect, diff[mask].mean())


# ---------------------------------------------------------------- build -> load round trip
def test_round_trip_samples(built):
    root, js, samples = built
    raw = json.loads(_read(js, "r"))
    n_def = sum(1 for k in raw if "/test/good/" not in k)
    n_good = len(raw) - n_def
    assert (n_good, n_def) == (5 * synth.N_TEST_GOOD, 5 * 3 * synth.N_PER_DEFECT)
    assert len(samples) == 2 * n_good + 5 * n_def                        # good: AD+OC; defective: all five
    types = Counter(s.question_type for s in samples)
    assert types == {"Anomaly Detection": len(raw), "Object Classification": len(raw), "Defect Classification": n_def,
                     "Defect Localization": n_def, "Defect Grounding": n_def}
    for s in samples:
        ds, cat, split, label, fname = s.image.split("/")
        assert (s.dataset, s.category, s.label, split) == ("synth", cat, label, "test")
        assert s.root == os.path.abspath(root) and s.path() == os.path.join(root, s.image)
        assert len(s.similar_templates) == len(s.random_templates) == 5
        for t in s.template_paths(5) + s.template_paths(5, "random"):
            assert t.startswith(os.path.join(root, "synth", cat, "train", "good") + os.sep) and os.path.isfile(t)
        gold = s.options.get(s.answer)
        if s.question_type == "Anomaly Detection":
            assert gold == ("No." if label == "good" else "Yes.") and sorted(s.options.values()) == ["No.", "Yes."]
        elif s.question_type == "Object Classification":
            assert gold == cat.replace("_", " ").capitalize() + "." and len(s.options) == 4
        elif s.question_type == "Defect Classification":
            assert gold == label.replace("_", " ").capitalize() + "." and len(set(s.options.values())) == 4
        else:
            mask = _pixels(os.path.join(root, s.mask_path))[2] > 0
            assert s.mask_path == f"synth/{cat}/ground_truth/{label}/{fname[:-4]}_mask.png"
            ys, xs = np.nonzero(mask)
            row, col = int(ys.mean() * 3 // 224), int(xs.mean() * 3 // 224)
            if s.question_type == "Defect Localization":
                assert gold == [["Top left.", "Top.", "Top right."], ["Left.", "Center.", "Right."],
                                ["Bottom left.", "Bottom.", "Bottom right."]][row][col]
            else:
                assert s.options == {} and json.loads(s.answer) == {"bbox_2d": _box(mask)}
    with pytest.raises(ValueError, match="similar"):
        samples[0].template_paths(1, "best")


def test_similar_templates_are_ranked_by_appearance(built):
    # Fabric comes in 3 colours: the most similar template must share the query's colour far
    # more often than a random train image does.
    root, _, samples = built
    mean = lambda rel: _pixels(os.path.join(root, rel))[2].astype(float).mean((0, 1))
    hits = []
    for s in {s.image: s for s in samples if s.category == "fabric"}.values():
        q = mean(s.image)
        d_top = np.linalg.norm(mean(s.similar_templates[0]) - q)
        d_all = [np.linalg.norm(mean(f"synth/fabric/train/good/{i:03d}.png") - q) for i in range(synth.N_TRAIN)]
        hits.append(d_top <= np.median(d_all))
    assert np.mean(hits) > 0.9


def test_answer_letters_balanced_and_seeded(built, tmp_path):
    root, js, samples = built
    four = Counter(s.answer for s in samples if len(s.options) == 4)
    assert sum(four.values()) >= 200 and max(four.values()) / sum(four.values()) <= 0.40, four
    yes = [s for s in samples if s.question_type == "Anomaly Detection" and s.label != "good"]
    share = np.mean([s.options["A"] == "Yes." for s in yes])
    assert 0.3 <= share <= 0.7
    again = json.loads(_read(js, "r"))     # same seed -> same json: checked in test_synth_deterministic_for_a_seed
    other = mvtec.build(os.path.join(root, "synth"), str(tmp_path / "other.json"), seed=1)
    assert other.keys() == again.keys()
    assert [t["Answer"] for r in other.values() for t in r["conversation"]] != \
           [t["Answer"] for r in again.values() for t in r["conversation"]]


# ---------------------------------------------------------------- other layouts
def test_loco_3d_and_visa_layouts(tmp_path, capsys):
    base = tmp_path / "data"
    # MVTec-LOCO: one folder of masks per image, their union is the defect.
    loco = base / "loco" / "juice_bottle"
    for i in range(3):
        _save(loco / "train" / "good" / f"{i:03d}.png", _img(i))
    _save(loco / "test" / "good" / "000.png", _img(10))
    _save(loco / "test" / "logical_anomalies" / "000.png", _img(11))
    _save(loco / "test" / "structural_anomalies" / "000.png", _img(12))      # no mask anywhere
    m1, m2 = np.zeros((48, 64)), np.zeros((48, 64))
    m1[5:9, 3:7], m2[30:40, 50:60] = 255, 255
    _save(loco / "ground_truth" / "logical_anomalies" / "000" / "000.png", m1)
    _save(loco / "ground_truth" / "logical_anomalies" / "000" / "001.png", m2)
    # MVTec 3D-AD: rgb/ and gt/ side by side; normal gt masks are empty.
    cookie = base / "mvtec3d" / "cookie"
    for i in range(2):
        _save(cookie / "train" / "good" / "rgb" / f"{i:03d}.png", _img(20 + i))
    _save(cookie / "test" / "good" / "rgb" / "000.png", _img(22))
    _save(cookie / "test" / "good" / "gt" / "000.png", np.zeros((48, 64)))
    _save(cookie / "test" / "crack" / "rgb" / "000.png", _img(23))
    m3 = np.zeros((48, 64))
    m3[40:44, 10:30] = 255
    _save(cookie / "test" / "crack" / "gt" / "000.png", m3)
    # VisA after its 1cls split: JPEGs, test/bad, mask = stem + .png (here at half resolution).
    candle = base / "visa" / "candle"
    for i in range(2):
        _save(candle / "train" / "good" / f"{i:03d}.JPG", _img(30 + i))
    _save(candle / "test" / "bad" / "007.JPG", _img(33))
    m4 = np.zeros((24, 32))
    m4[2:5, 20:31] = 255
    _save(candle / "ground_truth" / "bad" / "007.png", m4)

    out = {}
    for name in ("loco", "mvtec3d", "visa"):
        out[name] = mvtec.build(str(base / name), str(tmp_path / f"{name}.json"))
    err = capsys.readouterr().err
    assert "1 defective images have no" in err and "loco/juice_bottle/test/structural_anomalies/000.png" in err
    assert "['bad'] name no defect kind" in err                              # VisA: counted, not silent

    loco_key = "loco/juice_bottle/test/logical_anomalies/000.png"
    rec = out["loco"][loco_key]
    assert rec["mask_path"] == "loco/juice_bottle/ground_truth/logical_anomalies/000"
    grounding = [t for t in rec["conversation"] if t["type"] == "Defect Grounding"][0]
    assert json.loads(grounding["Answer"])["bbox_2d"] == [3, 5, 60, 40]               # union of both masks
    types = [t["type"] for t in out["loco"]["loco/juice_bottle/test/structural_anomalies/000.png"]["conversation"]]
    assert types == ["Anomaly Detection", "Defect Classification", "Object Classification"]
    assert sorted(rec["similar_templates"]) == [f"loco/juice_bottle/train/good/{i:03d}.png" for i in range(3)]

    key3d = "mvtec3d/cookie/test/crack/rgb/000.png"
    assert set(out["mvtec3d"]) == {key3d, "mvtec3d/cookie/test/good/rgb/000.png"}
    assert out["mvtec3d"][key3d]["mask_path"] == "mvtec3d/cookie/test/crack/gt/000.png"
    assert out["mvtec3d"]["mvtec3d/cookie/test/good/rgb/000.png"]["mask_path"] is None
    assert json.loads(out["mvtec3d"][key3d]["conversation"][-1]["Answer"])["bbox_2d"] == [10, 40, 30, 44]

    visa = out["visa"]["visa/candle/test/bad/007.JPG"]
    assert visa["mask_path"] == "visa/candle/ground_truth/bad/007.png"
    assert [t["type"] for t in visa["conversation"]] == ["Anomaly Detection", "Defect Localization",
                                                         "Object Classification", "Defect Grounding"]
    loc = visa["conversation"][1]
    assert loc["Options"][loc["Answer"]] == "Top right."                    # centroid (25, 3) of a 32x24 mask
    assert json.loads(visa["conversation"][-1]["Answer"])["bbox_2d"] == [40, 4, 62, 10]   # mask box x2 in image px

    s3d = data.load_mmad(str(tmp_path / "mvtec3d.json"), str(base))
    crack = [s for s in s3d if s.image == key3d]
    assert {s.label for s in crack} == {"crack"} and {s.category for s in crack} == {"cookie"}
    assert {s.label for s in s3d if "good" in s.image} == {"good"}
    assert crack[0].template_paths(1)[0].startswith(str(cookie / "train" / "good" / "rgb"))
    assert len(data.load_mmad(str(tmp_path / "loco.json"), str(base))) == 2 + 5 + 3
    assert {s.label for s in data.load_mmad(str(tmp_path / "visa.json"), str(base))} == {"bad"}


# ---------------------------------------------------------------- hand-written MMAD json
def _mmad_fixture(tmp_path):
    root = tmp_path / "MMAD"
    _save(root / "MVTec-AD/bottle/test/broken_large/000.png", _img(1))
    _save(root / "MVTec-AD/bottle/test/good/001.png", _img(2))
    _save(root / "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png", np.full((48, 64), 255))
    for i in range(2):
        _save(root / f"MVTec-AD/bottle/train/good/{i:03d}.png", _img(3 + i))
    tpl = {"similar_templates": ["MVTec-AD/bottle/train/good/001.png", "MVTec-AD/bottle/train/good/000.png"],
           "random_templates": ["MVTec-AD/bottle/train/good/000.png"]}
    recs = {
        "MVTec-AD/bottle/test/broken_large/000.png": {
            "image_path": "MVTec-AD/bottle/test/broken_large/000.png",
            "conversation": [
                {"Question": "Is there any defect in the object?", "Answer": "A",
                 "Options": {"A": "Yes.", "B": "No."}, "type": "Anomaly Detection", "annotation": True},
                {"Question": "What is the bottle's mouth shape?", "Answer": "C",
                 "Options": {"A": "Square.", "B": "Oval.", "C": "Round.", "D": "Star."}, "type": "Object Structure"},
                {"Question": "What colour is the bottle?", "Answer": "B",
                 "Options": {"A": "Red.", "B": "Brown.", "C": "Blue.", "D": "Green."}, "type": "Object Details"},
                {"Question": "Describe the defect.", "Answer": "D",
                 "Options": {"A": "a", "B": "b", "C": "c", "D": "A broken rim."}, "type": "Defect Description"}],
            "mask_path": "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png", **tpl},
        "MVTec-AD/bottle/test/good/001.png": {
            "conversation": [{"Question": "Is there any defect in the object?", "Answer": "B",
                              "Options": {"A": "Yes.", "B": "No."}, "type": "Anomaly Detection"}],
            "mask_path": None, **tpl}}
    return root, recs


def _write(tmp_path, recs, name="mmad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(recs, indent=2))
    return str(path)


def test_hand_written_mmad_json(tmp_path):
    root, recs = _mmad_fixture(tmp_path)
    samples = data.load_mmad(_write(tmp_path, recs), str(root))
    assert [s.question_type for s in samples] == ["Anomaly Detection", "Object Analysis", "Object Analysis",
                                                  "Defect Description", "Anomaly Detection"]
    s = samples[1]
    assert (s.image, s.dataset, s.category, s.label) == ("MVTec-AD/bottle/test/broken_large/000.png",
                                                        "MVTec-AD", "bottle", "broken_large")
    assert (s.question, s.answer, s.options["C"]) == ("What is the bottle's mouth shape?", "C", "Round.")
    assert s.mask_path == "MVTec-AD/bottle/ground_truth/broken_large/000_mask.png"
    assert s.path() == str(root / "MVTec-AD/bottle/test/broken_large/000.png")
    assert s.template_paths(1) == [str(root / "MVTec-AD/bottle/train/good/001.png")]
    assert s.template_paths(3, "random") == [str(root / "MVTec-AD/bottle/train/good/000.png")]
    assert (samples[4].label, samples[4].mask_path, samples[4].answer) == ("good", None, "B")


# ---------------------------------------------------------------- bad inputs
def _load_error(tmp_path, recs, root):
    with pytest.raises(ValueError) as e:
        data.load_mmad(_write(tmp_path, recs), str(root))
    return str(e.value)


def test_missing_image_named(tmp_path):
    root, recs = _mmad_fixture(tmp_path)
    os.remove(root / "MVTec-AD/bottle/test/good/001.png")
    msg = _load_error(tmp_path, recs, root)
    assert "mmad.json" in msg and "1 image problem under" in msg and "MVTec-AD/bottle/test/good/001.png missing" in msg
    assert "--root" in msg                                                    # says what to do


def test_truncated_png_and_jpeg_named(tmp_path):
    root, recs = _mmad_fixture(tmp_path)
    p = root / "MVTec-AD/bottle/train/good/000.png"                           # a template, not a query image
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    msg = _load_error(tmp_path, recs, root)
    assert "MVTec-AD/bottle/train/good/000.png cannot be decoded" in msg and "re-download" in msg
    _save(root / "MVTec-AD/bottle/test/good/002.JPG", _img(9, 200, 200))
    j = root / "MVTec-AD/bottle/test/good/002.JPG"
    j.write_bytes(j.read_bytes()[: len(j.read_bytes()) // 2])
    recs["MVTec-AD/bottle/test/good/002.JPG"] = recs["MVTec-AD/bottle/test/good/001.png"]
    msg = _load_error(tmp_path, recs, root)
    assert "2 image problems" in msg and "002.JPG cannot be decoded" in msg   # all problems collected


def test_paths_escaping_root_rejected(tmp_path):
    root, recs = _mmad_fixture(tmp_path)
    _save(tmp_path / "outside.png", _img(5))
    recs["../outside.png"] = recs["MVTec-AD/bottle/test/good/001.png"]
    msg = _load_error(tmp_path, recs, root)
    assert "../outside.png escapes the root" in msg and "relative" in msg
    del recs["../outside.png"]
    recs["MVTec-AD/../MVTec-AD/bottle/test/good/001.png"] = recs["MVTec-AD/bottle/test/good/001.png"]
    assert "MVTec-AD/../MVTec-AD/bottle/test/good/001.png escapes the root" in _load_error(tmp_path, recs, root)
    del recs["MVTec-AD/../MVTec-AD/bottle/test/good/001.png"]
    os.symlink(tmp_path / "outside.png", root / "MVTec-AD/bottle/test/good/link.png")
    recs["MVTec-AD/bottle/test/good/link.png"] = recs["MVTec-AD/bottle/test/good/001.png"]
    assert "MVTec-AD/bottle/test/good/link.png escapes the root" in _load_error(tmp_path, recs, root)


def test_malformed_json_names_file_and_line(tmp_path):
    root, _ = _mmad_fixture(tmp_path)
    path = tmp_path / "broken.json"
    path.write_text('{\n  "a.png": {\n    "conversation": [,]\n  }\n}\n')
    with pytest.raises(ValueError) as e:
        data.load_mmad(str(path), str(root))
    assert "broken.json" in str(e.value) and "line 3" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        data.load_mmad(str(tmp_path / "nothere.json"), str(root))


def test_record_without_conversation_and_bad_answer(tmp_path):
    root, recs = _mmad_fixture(tmp_path)
    del recs["MVTec-AD/bottle/test/good/001.png"]["conversation"]
    msg = _load_error(tmp_path, recs, root)
    assert "mmad.json" in msg and "'MVTec-AD/bottle/test/good/001.png' has no 'conversation'" in msg
    root, recs = _mmad_fixture(tmp_path)
    recs["MVTec-AD/bottle/test/broken_large/000.png"]["conversation"][1]["Answer"] = "E"
    msg = _load_error(tmp_path, recs, root)
    assert "'MVTec-AD/bottle/test/broken_large/000.png' turn 1 answer 'E' is not one of its options" in msg
    recs["MVTec-AD/bottle/test/broken_large/000.png"]["conversation"][1]["Answer"] = "C"
    del recs["MVTec-AD/bottle/test/broken_large/000.png"]["conversation"][2]["Options"]
    assert "turn 2 lacks Options" in _load_error(tmp_path, recs, root)


# ---------------------------------------------------------------- few-shot split
def _per_stratum(samples):
    return Counter((s.dataset, s.category, s.label) for s in {s.image: s for s in samples}.values())


def test_few_shot_disjoint_and_balanced(built):
    samples = built[2]
    everything = _per_stratum(samples)
    assert len(everything) == 20                                          # 5 categories x (good + 3 defects)
    train, held = data.few_shot(samples, n_images=40, seed=0)
    assert not {s.image for s in train} & {s.image for s in held}
    assert len(train) + len(held) == len(samples)
    assert set(_per_stratum(train).values()) == {2}                       # 40 images over 20 strata
    for img in {s.image for s in train}:                                  # an image keeps all its questions
        assert sum(s.image == img for s in train) == sum(s.image == img for s in samples)
    counts = _per_stratum(data.few_shot(samples, n_images=30, seed=0)[0])
    assert sum(counts.values()) == 30 and max(counts.values()) - min(counts.values()) <= 1
    # fewer images than asked (115 < 600): half of every stratum, rounded up, never all of it
    train, held = data.few_shot(samples, n_images=600, seed=0)
    assert _per_stratum(train) == {k: (n + 1) // 2 for k, n in everything.items()}
    assert _per_stratum(held) == {k: n // 2 for k, n in everything.items()}
    # more images than asked but the cap binds: each stratum keeps one held out
    train, held = data.few_shot(samples, n_images=110, seed=0)
    assert _per_stratum(train) == {k: n - 1 for k, n in everything.items()}
    a = {s.image for s in data.few_shot(samples, 40, seed=0)[0]}
    assert a == {s.image for s in data.few_shot(samples, 40, seed=0)[0]}
    assert a != {s.image for s in data.few_shot(samples, 40, seed=1)[0]}


# ---------------------------------------------------------------- CLI
def test_stats_cli(built, capsys):
    root, js, samples = built
    assert data.main(["stats", js, "--root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["dataset", "type", "A", "B", "C", "D", "E", "box", "total"]
    rows = {" ".join(l.split()[1:-7]): [int(v) for v in l.split()[-7:]] for l in lines[1:-1]}
    for qt, row in rows.items():
        want = Counter(s.answer for s in samples if s.question_type == qt)
        expect = [want[c] for c in "ABCDE"] + ([len([s for s in samples if s.question_type == qt])] * 2
                                               if qt == "Defect Grounding" else [0, sum(want.values())])
        assert row == expect, qt
    assert lines[-1] == f"{len(samples)} questions on 115 images"


def test_cli_error_is_one_line_exit_2(tmp_path):
    (tmp_path / "bad.json").write_text("{oops")
    r = subprocess.run([sys.executable, os.path.join(REPO, "data.py"), "stats", str(tmp_path / "bad.json"),
                        "--root", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("data.py: error: ") and "bad.json" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, os.path.join(REPO, "data.py"), "build", str(tmp_path / "none"),
                        "--out", str(tmp_path / "q.json")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("data.py: error: ") and "none" in r.stderr


@pytest.mark.parametrize("argv, words", [(["stats", "x.json"], "--root"),        # a required flag
                                         (["build", "ROOT"], "--out"),
                                         (["synth"], "OUT"),                     # the positional OUT
                                         (["synth", "o", "--seed", "one"], "--seed"),
                                         (["paint"], "paint")])                  # not a subcommand
def test_cli_usage_errors_are_one_line_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        data.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("data.py") and words in err


def test_mmad_mask_paths_relative_to_the_category_folder(tmp_path):
    """MMAD's mmad.json gives mask_path from the image's dataset/category folder ("rbg_mask/..." beside
    "DS-MVTec/bottle/image/..."), not from the root: the whole file was refused as "missing" masks."""
    from badinputs import mvtec_folder
    mvtec_folder(tmp_path / "root" / "ds")
    records = mvtec.build(str(tmp_path / "root" / "ds"), str(tmp_path / "q.json"))
    query = next(k for k, r in records.items() if r["mask_path"])
    records[query]["mask_path"] = records[query]["mask_path"].split("/", 2)[2]  # "ground_truth/crack/000_mask.png"
    (tmp_path / "q.json").write_text(json.dumps(records))
    samples = data.load_mmad(str(tmp_path / "q.json"), str(tmp_path / "root"))
    assert {s.mask_path for s in samples if s.image == query} == {"ds/cat/ground_truth/crack/000_mask.png"}
    records[query]["mask_path"] = "ground_truth/crack/nope.png"  # found nowhere: still one line naming it
    (tmp_path / "q.json").write_text(json.dumps(records))
    with pytest.raises(ValueError, match="ground_truth/crack/nope.png missing"):
        data.load_mmad(str(tmp_path / "q.json"), str(tmp_path / "root"))
