"""eval.py: MMAD aggregation checked against hand-computed tables, option reshuffle, answer parsing,
resumable answers.jsonl, tables/compare, CLI errors, and one tiny end-to-end run."""
import json
import os
import sys
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import eval as ev  # noqa: E402  (the repo's eval.py, not the builtin)
import data  # noqa: E402

YN = {"A": "Yes.", "B": "No."}


def rec(image, kind, gold, predicted, options=None):
    return {"image": image, "question": f"q {kind} {image}", "question_type": kind,
            "correct_answer": gold, "predicted": predicted, "options": options or {}}


def hand_made():
    good, bad = "MVTec-AD/bottle/test/good/{}.png", "MVTec-AD/bottle/test/broken/{}.png"
    return [
        # MVTec-AD, Anomaly Detection: 3 normal images, 2 right; 1 defective, 0 right.
        rec(good.format(0), "Anomaly Detection", "B", "B"),
        rec(good.format(1), "Anomaly Detection", "B", "B"),
        rec(good.format(2), "Anomaly Detection", "B", "A"),
        rec(bad.format(0), "Anomaly Detection", "A", "B"),
        # Defect Classification: 1 right, 1 unanswered (counts as wrong).
        rec(bad.format(0), "Defect Classification", "C", "C"),
        rec(bad.format(1), "Defect Classification", "C", None),
        # Object Structure right + Object Details wrong -> one "Object Analysis" column, 1 of 2.
        rec(good.format(0), "Object Structure", "A", "A"),
        rec(good.format(0), "Object Details", "D", "A"),
        # Scored by IoU, never by summarize.
        rec(bad.format(0), "Defect Grounding", '{"bbox_2d": [0, 0, 1, 1]}', None),
        # VisA: defective images only (AD = that side), no Object Analysis, has Defect Localization.
        rec("VisA/candle/test/bad/000.JPG", "Anomaly Detection", "A", "A"),
        rec("VisA/candle/test/bad/001.JPG", "Anomaly Detection", "A", "A"),
        rec("VisA/candle/test/bad/000.JPG", "Defect Classification", "B", "C"),
        rec("VisA/candle/test/bad/000.JPG", "Defect Localization", "D", "D"),
    ]


def test_columns_are_the_papers_table_2():
    assert ev.QUESTION_TYPES == ["Anomaly Detection", "Defect Classification", "Defect Localization",
                                 "Defect Description", "Defect Analysis", "Object Classification",
                                 "Object Analysis"]


def test_summarize_hand_computed():
    s = ev.summarize(hand_made())
    assert list(s) == ["MVTec-AD", "VisA", "Average"]
    assert ev.datasets({**s, "_meta": {}}) == ["MVTec-AD", "VisA"]
    m = s["MVTec-AD"]
    assert list(m) == ["Anomaly Detection", "Defect Classification", "Object Analysis", "Average"]
    assert m["Anomaly Detection"] == pytest.approx((200 / 3 + 0) / 2)      # (2/3 normal + 0/1 defective) / 2 = 33.33
    assert m["Defect Classification"] == pytest.approx(50.0)               # 1 of 2, the unanswered one is wrong
    assert m["Object Analysis"] == pytest.approx(50.0)                     # Structure 1/1 + Details 0/1 = 1 of 2
    assert m["Average"] == pytest.approx((100 / 3 + 50 + 50) / 3)          # 44.44
    v = s["VisA"]
    assert list(v) == ["Anomaly Detection", "Defect Classification", "Defect Localization", "Average"]
    assert v["Anomaly Detection"] == pytest.approx(100.0)                  # defective side only: 2 of 2
    assert v["Defect Classification"] == 0.0 and v["Defect Localization"] == 100.0
    assert v["Average"] == pytest.approx(200 / 3)                          # (100 + 0 + 100) / 3
    a = s["Average"]
    assert list(a) == ["Anomaly Detection", "Defect Classification", "Defect Localization", "Object Analysis",
                       "Average"]
    assert a["Anomaly Detection"] == pytest.approx((100 / 3 + 100) / 2)    # 66.67, over both datasets
    assert a["Defect Classification"] == pytest.approx((50 + 0) / 2)       # 25
    assert a["Defect Localization"] == pytest.approx(100.0)                # VisA alone has it
    assert a["Object Analysis"] == pytest.approx(50.0)                     # MVTec-AD alone has it
    assert a["Average"] == pytest.approx((400 / 9 + 200 / 3) / 2)          # mean of dataset Averages = 55.56
    assert ev.summarize([]) == {"Average": {}}


def test_summarize_drop_unanswered_hand_computed():
    m = ev.summarize(hand_made(), unanswered="drop")["MVTec-AD"]
    assert m["Defect Classification"] == 100.0            # the unanswered one leaves the denominator: 1 of 1
    assert m["Anomaly Detection"] == pytest.approx(100 / 3)   # nothing unanswered there: as with "wrong"
    assert ev.summarize(hand_made()) == ev.summarize(hand_made(), unanswered="wrong")   # the default
    with pytest.raises(ValueError, match="wrong, drop"):
        ev.summarize(hand_made(), unanswered="skip")


def test_drop_removes_only_the_unanswered_question():
    # MMAD's summary script calls list.remove inside its loop over that list, so the record right after each
    # unanswered one is skipped too: here it would skip both wrong answers and report 100%.
    bad = "VisA/candle/test/bad/{}.JPG"
    records = [rec(bad.format(0), "Defect Classification", "B", None),
               rec(bad.format(1), "Defect Classification", "B", "C"),    # right after an unanswered one
               rec(bad.format(2), "Defect Classification", "B", None),
               rec(bad.format(3), "Defect Classification", "B", None),   # two in a row
               rec(bad.format(4), "Defect Classification", "B", "A"),
               rec(bad.format(5), "Defect Classification", "B", "B")]
    assert ev.summarize(records, "drop")["VisA"]["Defect Classification"] == pytest.approx(100 / 3)   # 1 of 3
    assert ev.summarize(records, "wrong")["VisA"]["Defect Classification"] == pytest.approx(100 / 6)  # 1 of 6
    only_unanswered = [rec(bad.format(0), "Defect Analysis", "A", None)]
    assert ev.summarize(only_unanswered, "drop") == {"Average": {}}


def test_consistency_per_subtask():
    pytest.importorskip("roam")
    bad = "VisA/candle/test/bad/{}.JPG"
    def said(kind, think, answer, gold="A"):
        output = f"<think>{think}</think><answer>{answer}</answer>"
        return {**rec(bad.format(0), kind, gold, answer, YN), "output": output}
    records = [said("Anomaly Detection", "The wick is bent, so the answer is A. No other defects.", "A"),  # consistent
               said("Anomaly Detection", "There is no template image.", "A"),   # concludes nothing: not consistent
               said("Anomaly Detection", "So the answer is no.", "A"),          # disagrees
               {**said("Anomaly Detection", "so A", "A"), "output": "A"},       # not well formed: not counted
               said("Defect Analysis", "Therefore, B.", "B", gold="A"),        # consistent though wrong
               said("Defect Grounding", "so A", "A")]                          # not a choice subtask
    c = ev.consistency(records)
    assert c == {"Anomaly Detection": pytest.approx(100 / 3), "Defect Analysis": 100.0,
                 "Overall": 50.0, "well_formed": 4, "replies": 5}
    assert ev.consistency([]) == {"well_formed": 0, "replies": 0}


def test_results_md_gives_both_averages_when_some_are_unanswered():
    pytest.importorskip("roam")
    records = hand_made()   # one unanswered Defect Classification question
    notes = ev._notes(records, ev.detection_errors(records), ev.consistency(records), "drop")
    assert "Unanswered questions: 1 of 12; in the tables they are dropped from the denominator" in notes
    wrong, drop = (ev.summarize(records, u)["Average"]["Average"] for u in ("wrong", "drop"))
    assert f"Average with unanswered as wrong: {wrong:.2f}%; dropped (MMAD's convention): {drop:.2f}%." in notes
    answered = [r for r in records if r["predicted"] is not None]
    assert "Average with" not in ev._notes(answered, ev.detection_errors(answered), ev.consistency(answered), "wrong")


def test_normal_means_a_good_path_component():
    assert ev.is_normal("GoodsAD/cigarette_box/test/good/001.jpg")
    assert not ev.is_normal("GoodsAD/drink_goods/test/bad/001.jpg")  # "goods" is not "good"
    assert ev.is_normal("MVTec-AD\\bottle\\test\\good\\000.png")


def test_detection_errors_overkill_and_miss():
    ny = {"A": "No.", "B": "Yes."}  # reshuffled options: the letter alone does not say defective
    good, bad = "VisA/pcb1/test/good/{}.JPG", "VisA/pcb1/test/bad/{}.JPG"
    records = [
        rec(good.format(0), "Anomaly Detection", "B", "A", YN),   # "Yes." on a normal image: overkill
        rec(good.format(1), "Anomaly Detection", "B", "B", YN),
        rec(good.format(2), "Anomaly Detection", "A", "A", ny),
        rec(good.format(3), "Anomaly Detection", "A", None, ny),  # unanswered: wrong, not overkill
        rec(bad.format(0), "Anomaly Detection", "B", "A", ny),    # "No." on a defective image: miss
        rec(bad.format(1), "Anomaly Detection", "A", "A", YN),
        {**rec(bad.format(0), "Defect Grounding", "{}", None), "iou": 0.5},
        {**rec(bad.format(1), "Defect Grounding", "{}", None), "iou": 0.0},
    ]
    e = ev.detection_errors(records)
    assert e["questions"] == 6 and e["unanswered"] == 1
    assert e["overkill"] == pytest.approx(25.0)   # 1 of 4 normal
    assert e["miss"] == pytest.approx(50.0)       # 1 of 2 defective
    assert e["grounding_iou"] == pytest.approx(0.25)
    no_options = ev.detection_errors([rec(good.format(0), "Anomaly Detection", "B", "A")])
    assert no_options["overkill"] is None and no_options["miss"] is None


def test_overkill_and_miss_are_means_of_the_datasets_rates():
    """MMAD's summary script computes overkill and miss per dataset, then averages the datasets (as its tables):
    pooled over all questions, the dataset with the most images would set them."""
    def answered(image, said):  # an Anomaly Detection question on `image`, answered with the option text `said`
        return rec(image, "Anomaly Detection", "B" if "/good/" in image else "A", "A" if said == "Yes." else "B",
                   {"A": "Yes.", "B": "No."})
    mvtec = [answered("MVTec-AD/bottle/test/good/0.png", "Yes."),     # overkill 1 of 1: 100%
             answered("MVTec-AD/bottle/test/broken/0.png", "No.")]    # miss 1 of 1: 100%
    visa = ([answered(f"VisA/pcb1/test/good/{i}.JPG", "No.") for i in range(3)]      # overkill 0 of 3
            + [answered(f"VisA/pcb1/test/bad/{i}.JPG", "Yes.") for i in range(3)])   # miss 0 of 3
    e = ev.detection_errors(mvtec + visa)
    assert e["overkill"] == pytest.approx((100 + 0) / 2) and e["miss"] == pytest.approx((100 + 0) / 2)  # pooled: 25
    goods = [answered("GoodsAD/drink_goods/test/bad/0.jpg", "No."),   # defective images only: miss 1 of 2
             answered("GoodsAD/drink_goods/test/bad/1.jpg", "Yes.")]
    e = ev.detection_errors(mvtec + visa + goods)
    assert e["miss"] == pytest.approx((100 + 0 + 50) / 3)
    assert e["overkill"] == pytest.approx(50.0)   # no normal GoodsAD image: no GoodsAD overkill (MMAD's script: 100)


def test_shuffle_remaps_gold_and_is_deterministic():
    opts = {"A": "scratch", "B": "crack", "C": "hole", "D": "stain"}
    landed = set()
    for i in range(100):
        new, gold = ev.shuffle_options(opts, "B", seed=0, key=f"img{i}\nq")
        assert list(new) == ["A", "B", "C", "D"] and sorted(new.values()) == sorted(opts.values())
        assert new[gold] == "crack"                                        # gold follows its text
        assert ev.shuffle_options(opts, "B", 0, f"img{i}\nq") == (new, gold)  # same seed, same order
        landed.add(gold)
    assert landed == {"A", "B", "C", "D"}  # the gold text moves over every position
    orders = {tuple(ev.shuffle_options(opts, "A", seed, "k")[0].values()) for seed in range(20)}
    assert len(orders) > 1                  # the seed matters
    assert ev.shuffle_options({}, '{"bbox_2d": [1, 2, 3, 4]}', 0, "k") == ({}, '{"bbox_2d": [1, 2, 3, 4]}')


def test_parse_prediction_fallbacks():
    pytest.importorskip("roam")
    abcd = {"A": "scratch", "B": "crack", "C": "hole", "D": "stain"}
    assert ev.parse_prediction("<think>It looks cracked, C? no.</think><answer>B</answer>", abcd) == ("B", "answer")
    # No answer block: MMAD's last standalone letter that is an option (E is not one here).
    assert ev.parse_prediction("Between C and D I pick D, not E", abcd) == ("D", "letter")
    # Answer block names nothing the roam parser knows: closest option text, "scrach" ~ "scratch" (ratio 0.92).
    assert ev.parse_prediction("<think>hmm</think><answer>scrach</answer>", abcd) == ("A", "text")
    assert ev.parse_prediction("<think>hmm</think><answer>zzz</answer>", abcd) == (None, None)  # ratio < 0.5
    assert ev.parse_prediction("", abcd) == (None, None)


@dataclass
class FakeSample:  # the fields of data.Sample that eval.py touches
    image: str
    question: str
    options: dict
    answer: str
    question_type: str


def samples5():
    return [FakeSample(f"synth/plate/test/{d}/{i}.png", f"Question {i}?", {"A": "Yes.", "B": "No.", "C": "Maybe."},
                       "B" if d == "good" else "A", "Anomaly Detection")
            for i, d in enumerate(["good", "good", "scratch", "scratch", "good"])]


def oracle(calls):
    def generate_texts(batch):  # answers each question's (remapped) gold letter
        calls.append(len(batch))
        return [f"<think>I compared it.</think><answer>{s.answer}</answer>" for s in batch]
    def load():  # the model side is loaded only when something is left to answer
        calls.append("load")
        return generate_texts
    return load


def lines(path):
    with open(path) as f:
        return f.read().splitlines()


def test_answers_resume_and_truncated_line(tmp_path, capsys):
    pytest.importorskip("roam")
    samples, calls = samples5(), []
    records, n = ev.answer_all(samples + samples[:1], tmp_path, oracle(calls), batch_size=2, progress=False)
    assert n == 5 and calls == ["load", 2, 2, 1] and len(records) == 5    # the duplicate is asked once
    path = tmp_path / "answers.jsonl"
    assert len(lines(path)) == 5
    for s, r in zip(samples, records):
        assert r["predicted"] == r["correct_answer"] and r["parse_method"] == "answer"
        assert r["options"][r["correct_answer"]] == s.options[s.answer]  # remapped gold keeps its text
    assert ev.summarize(records)["synth"]["Anomaly Detection"] == 100.0

    calls.clear()
    again, n = ev.answer_all(samples, tmp_path, oracle(calls), progress=False)
    assert n == 0 and calls == [] and again == records and len(lines(path)) == 5

    # A run killed mid-write leaves half a line: ignored with a warning, that question asked again.
    text = path.read_text()
    path.write_text(text[:len(text) - len(lines(path)[-1]) // 2 - 1])
    assert ev.read_answers(path)[1] == 1
    _, n = ev.answer_all(samples, tmp_path, oracle(calls), progress=False)
    assert n == 1 and calls == ["load", 1]
    assert "ignored 1 unreadable line" in capsys.readouterr().err
    assert [json.loads(x)["image"] for x in lines(path)] == [s.image for s in samples]


def write_results(folder, records):
    os.makedirs(folder)
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump({**ev.summarize(records), "_meta": {"model": "x"}}, f)
    return os.path.join(folder, "results.json")


def test_tables_and_compare(tmp_path, capsys):
    base = [rec("VisA/c/test/good/0.png", "Anomaly Detection", "B", "A"),
            rec("VisA/c/test/bad/0.png", "Anomaly Detection", "A", "A"),
            rec("VisA/c/test/bad/0.png", "Defect Analysis", "C", "D")]
    trained = [{**r, "predicted": r["correct_answer"]} for r in base]
    one = ev.table_subtasks([("base", ev.summarize(base))]).splitlines()
    assert one[0] == "| Model | " + " | ".join(ev.QUESTION_TYPES) + " | Average |"
    assert one[2] == "| base | 50.00 | - | - | - | 0.00 | - | - | 25.00 |"  # AD (0+100)/2; avg (50+0)/2
    a = write_results(tmp_path / "base", base)
    b = write_results(tmp_path / "trained", trained)
    assert ev.main(["--compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "| Δ (trained − base) | +50.00 | - | - | - | +100.00 | - | - | +75.00 |" in out  # Table 2
    assert "| Setting | VisA | Average |" in out
    assert "| Δ (trained − base) | +75.00 | +75.00 |" in out                                  # Table 3
    assert "| Δ (trained − base) | +50.00 | +50.00 |" in out                                  # Table 5 (AD)


def exit_code(argv):
    with pytest.raises(SystemExit) as e:
        ev.main(argv)
    return e.value.code


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert exit_code(["--compare", str(tmp_path / "missing.json")]) == 2
    broken = tmp_path / "results.json"
    broken.write_text("{not json")
    assert exit_code(["--compare", str(broken)]) == 2
    assert exit_code(["--limit", "0", "--out", str(tmp_path / "o")]) == 2
    assert exit_code(["--shots", "3"]) == 2                       # a flag argparse rejects: one line too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("eval.py: error: ") for line in err)
    assert "missing.json" in err[0] and "results.json" in err[1] and "--limit" in err[2] and "--shots" in err[3]


def test_heldout_split_never_scores_a_training_image(request):
    data = pytest.importorskip("data")
    root, json_path = request.getfixturevalue("synthetic")
    held, _ = ev.load_questions(ev.Config(data=json_path, root=root))
    train, _ = data.few_shot(data.load_mmad(json_path, root))   # grpo.py's default draw
    assert held and train and not {s.image for s in held} & {s.image for s in train}
    assert all(s.question_type != "Defect Grounding" for s in held)  # only with --grounding
    assert len(ev.load_questions(ev.Config(data=json_path, root=root, limit=3))[0]) == 3


def test_tiny_model_end_to_end_and_resume(tmp_path, capsys, request):
    pytest.importorskip("data")
    pytest.importorskip("anomalyr1")
    request.getfixturevalue("tiny")                    # conftest: builds the tiny model once per session
    root, json_path = request.getfixturevalue("synthetic")
    out = tmp_path / "out"
    argv = ["--model", "tiny", "--data", json_path, "--root", root, "--split", "all",
            "--limit", "6", "--max-new-tokens", "16", "--batch-size", "4", "--device", "cpu", "--out", str(out)]
    assert ev.main(argv) == 0
    first = lines(out / "answers.jsonl")
    results = json.loads((out / "results.json").read_text())
    assert len(first) == 6 and results["_meta"]["generated"] == 6 and results["_meta"]["questions"] == 6
    assert "Average" in results and ev.datasets(results)
    md = (out / "results.md").read_text()
    assert "count as wrong (--unanswered wrong)" in md and "Reasoning/answer consistency" in md
    assert results["_consistency"]["replies"] == 6

    assert ev.main(argv) == 0                    # nothing left: nothing asked twice
    assert lines(out / "answers.jsonl") == first
    assert json.loads((out / "results.json").read_text())["_meta"]["generated"] == 0
    assert exit_code(argv[:-2] + ["--shots", "1", "--out", str(out)]) == 2   # other setting, same folder
    assert "another setting (shots differ)" in capsys.readouterr().err
    assert ev.main(argv + ["--unanswered", "drop"]) == 0                   # only re-scores the same answers
    assert json.loads((out / "results.json").read_text())["_meta"]["unanswered_rule"] == "drop"
    assert "dropped from the denominator (--unanswered drop" in (out / "results.md").read_text()


def test_limit_spreads_over_categories_and_subtasks_with_a_seed():
    from data import Sample
    samples = [Sample(image=f"ds/{cat}/test/x/{i}.png", root="/r", question="q", options={"A": "Yes.", "B": "No."},
                      answer="A", question_type=kind, dataset="ds", category=cat)
               for cat in ("bottle", "cable", "pill", "screw") for kind in ("Anomaly Detection", "Defect Localization")
               for i in range(10)]
    picked = data.spread_sample(samples, 8, seed=0)
    assert len(picked) == 8
    assert {(s.category, s.question_type) for s in picked} == {(s.category, s.question_type) for s in samples}
    assert [samples.index(s) for s in picked] == sorted(samples.index(s) for s in picked)  # the json's order
    assert data.spread_sample(samples, 8, seed=0) == picked
    assert data.spread_sample(samples, 8, seed=1) != picked              # the seed draws other questions
    assert data.spread_sample(samples, 1000, seed=0) == samples          # a limit above the count takes all


def test_shots_and_draw_default_to_the_checkpoints_run_settings(tmp_path):
    run = tmp_path / "run"
    for step, shots in (("step-000010", 0), ("step-000020", 2)):
        (run / step).mkdir(parents=True)
        config = {"shots": shots, "seed": 3, "n_images": 50}
        (run / step / "trainer_state.json").write_text(json.dumps({"step": 1, "config": config}))
    (run / "final").mkdir()
    newest = (2, {"seed": 3, "n_images": 50}, "as trained", config)
    assert ev.run_settings(str(run / "final")) == newest              # an old final/ had none: the newest beside it
    assert ev.run_settings(str(run / "step-000010"))[0] == 0          # its own state first
    default_draw = {"seed": 0, "n_images": 600}                         # grpo.py's defaults, as data.few_shot's
    assert ev.run_settings(str(tmp_path / "elsewhere"))[:2] == (1, default_draw)  # not a grpo.py run: MMAD Table 2
    import grpo
    assert ev.run_settings("tiny")[:2] == (grpo.TINY["shots"], default_draw)


def test_heldout_split_is_the_checkpoints_own_draw(tmp_path, capsys, request):
    """A run trained with grpo.py --seed 1 --n-images 50 trained on images that seed 0's default draw holds out:
    eval.py used to draw seed 0's split whatever the run, so it scored images the model had trained on."""
    pytest.importorskip("anomalyr1")
    import shutil
    import tiny
    request.getfixturevalue("tiny")                    # conftest: builds the tiny model once per session
    root, json_path = request.getfixturevalue("synthetic")
    run = tmp_path / "run"
    shutil.copytree(tiny.build_tiny(), run / "final")  # an old final/: no state, the newest step-*/ beside it
    (run / "step-000040").mkdir()
    config = {"shots": 0, "seed": 1, "n_images": 50}
    (run / "step-000040" / "trainer_state.json").write_text(json.dumps({"step": 40, "config": config}))
    shots, draw, why, _ = ev.run_settings(str(run / "final"))
    assert (shots, draw, why) == (0, {"seed": 1, "n_images": 50}, "as trained")

    samples = data.load_mmad(json_path, root)
    trained, held_out = data.few_shot(samples, n_images=50, seed=1)
    trained = {s.image for s in trained}
    assert trained & {s.image for s in data.few_shot(samples)[1]}   # seed 0's held-out split holds its training images
    held = ev.load_questions(ev.Config(model=str(run / "final"), data=json_path, root=root), draw)[0]
    assert held == [s for s in held_out if s.question_type != "Defect Grounding"]

    out = tmp_path / "eval"
    assert ev.main(["--model", str(run / "final"), "--data", json_path, "--root", root, "--limit", "4",
                    "--max-new-tokens", "4", "--device", "cpu", "--out", str(out)]) == 0
    assert "--split heldout: the images grpo.py --seed 1 --n-images 50 left out (as trained)" in capsys.readouterr().err
    answered = {json.loads(line)["image"] for line in lines(out / "answers.jsonl")}
    assert len(answered) >= 1 and not answered & trained
    assert json.loads((out / "results.json").read_text())["_meta"]["heldout_draw"] == draw


def test_data_defaults_to_the_json_the_run_trained_on(tmp_path, capsys, request):
    """A run trained with grpo.py --data mmad.json, scored with no --data, was scored on the synthetic set: its
    "held-out" split was then another json's images. The checkpoint's --data (and --root) is now the default."""
    pytest.importorskip("anomalyr1")
    import shutil
    import tiny
    request.getfixturevalue("tiny")
    root, json_path = request.getfixturevalue("synthetic")
    trained_on = tmp_path / "elsewhere" / "mine.json"           # not the synthetic set's own path
    trained_on.parent.mkdir()
    shutil.copy(json_path, trained_on)
    run = tmp_path / "run"
    shutil.copytree(tiny.build_tiny(), run / "final")
    config = {"shots": 0, "seed": 1, "n_images": 50, "data": str(trained_on), "root": root}
    (run / "final" / "trainer_state.json").write_text(json.dumps({"step": 3, "config": config}))
    out = tmp_path / "eval"
    assert ev.main(["--model", str(run / "final"), "--limit", "2", "--max-new-tokens", "4", "--device", "cpu",
                    "--out", str(out)]) == 0
    assert f"--data {trained_on} --root {root} (as trained)" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["_meta"]["data"] == str(trained_on)
    other = tmp_path / "eval2"                                  # a --data given still wins
    assert ev.main(["--model", str(run / "final"), "--data", json_path, "--root", root, "--limit", "2",
                    "--max-new-tokens", "4", "--device", "cpu", "--out", str(other)]) == 0
    assert json.loads((other / "results.json").read_text())["_meta"]["data"] == os.path.abspath(json_path)


def test_compare_warns_when_settings_differ(tmp_path):
    def result(name, shots, questions, draw=None):
        path = tmp_path / name / "results.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"ds": {"Anomaly Detection": 50.0, "Average": 50.0},
                                    "Average": {"Anomaly Detection": 50.0, "Average": 50.0},
                                    "_meta": {"shots": shots, "questions": questions, "split": "heldout",
                                              "heldout_draw": draw}}))
        return str(path)
    same = ev.compare([result("a", 0, 160), result("b", 0, 160)])
    assert "a: 160 questions, 0-shot" in same and "WARNING" not in same
    other = ev.compare([result("c", 0, 160), result("d", 1, 50)])
    assert "WARNING: these results differ in shots, questions" in other
    seed_1 = result("f", 0, 160, {"seed": 1, "n_images": 600})  # as many questions, on another run's held-out images
    assert "WARNING: these results differ in heldout_draw" in ev.compare([result("e", 0, 160), seed_1])


def test_checkpoints_are_named_after_their_run():
    """Every grpo.py run's checkpoint is called final: two runs' evals would share runs/eval/final_0shot (the
    second then refused: answers of another setting) and both read "final" in the tables."""
    assert ev.model_name("runs/grpo/final") == "grpo-final"
    assert ev.model_name("runs/classical/final/") == "classical-final"
    assert ev.model_name("runs/try/step-000020") == "try-step-000020"
    assert ev.model_name("/models/Qwen2.5-VL-3B-Instruct") == "Qwen2.5-VL-3B-Instruct"
    assert ev.model_name("tiny") == "tiny"


def test_grounding_is_scored_in_the_frame_the_model_sees(tmp_path, request):
    """The model answers a box in the resized image it sees; the json's gold is in the original's pixels. Eval
    compared the two as they were (a perfect box on a 224-px synthetic image, shown at 112 px, scored IoU 0.25)."""
    request.getfixturevalue("tiny")
    root, json_path = request.getfixturevalue("synthetic")
    import grpo
    samples = [s for s in ev.load_questions(ev.Config(data=json_path, root=root, grounding=True))[0]
               if s.question_type == "Defect Grounding"][:2]
    moved = grpo.golds_in_model_frame(samples, "tiny")
    for s, m in zip(samples, moved):  # synthetic images are 224 px, the tiny model sees them at 112
        assert json.loads(m.answer)["bbox_2d"] == [v / 2 for v in json.loads(s.answer)["bbox_2d"]]
        perfect = f"<think>x</think><answer>{m.answer}</answer>"
        assert ev.record(m, perfect)["iou"] == pytest.approx(1.0) and ev.record(s, perfect)["iou"] < 0.5
