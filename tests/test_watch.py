"""What a run shows (watch.py): held-out accuracy with --eval-every, samples.jsonl, the summary, and plot.py on the
result. One small tiny-model run is shared by the module: 2 steps, 2 prompts x G = 2, 8 new tokens, held-out every
step on 6 questions."""
import contextlib
import io
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import eval  # noqa: E402
import grpo  # noqa: E402
import plot  # noqa: E402
import watch  # noqa: E402

FLAGS = ["--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-completion", "8", "--warmup-steps", "0",
         "--eval-every", "1", "--eval-questions", "6", "--log-samples", "2"]


def lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run(tiny, synthetic, tmp_path_factory):
    """(run folder, what grpo.py printed on stdout)."""
    out = str(tmp_path_factory.mktemp("watch") / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert grpo.main(FLAGS + ["--out", out]) == 0
    return out, printed.getvalue()


def test_heldout_at_step_0_and_every_k(run):
    out, _ = run
    rows = lines(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]) == {"step", "heldout_accuracy", "heldout_anomaly_detection", "heldout_consistency",
                            "heldout_well_formed", "heldout_top_letter"}  # before step 1: the model GRPO starts from
    for r in rows:
        assert 0 <= r["heldout_accuracy"] <= 100 and 0 <= r["heldout_well_formed"] <= 100
    assert "reward" in rows[1] and "heldout_accuracy" in rows[2]  # merged into the step's own row


def test_samples_jsonl_has_every_completion_and_its_advantage(run):
    out, _ = run
    samples = lines(os.path.join(out, "samples.jsonl"))
    assert [s["step"] for s in samples] == [1, 1, 2, 2]  # --log-samples 2 prompts per step
    for s in samples:
        assert {"image", "question_type", "question", "options", "gold", "completions"} <= set(s)
        assert os.path.isfile(s["image"]) and s["gold"] in s["options"]
        assert len(s["completions"]) == 2  # G
        for c in s["completions"]:
            assert set(c["rewards"]) == {"accuracy", "roam"} and isinstance(c["text"], str)
            assert c["reward"] == pytest.approx(sum(c["rewards"].values()), abs=1e-3)
        assert sum(c["advantage"] for c in s["completions"]) == pytest.approx(0.0, abs=1e-3)  # a z-score per group


def test_summary_is_printed(run):
    out, printed = run
    assert printed.startswith("grpo summary (")
    for words in ["2 steps, rewards accuracy,roam", "mean of steps 1 -> 2", "reward ", "consistency",
                  "held-out, 6 questions", "step 0 -> 2", "macro accuracy", "wall time",
                  f"{out}/metrics.jsonl, {out}/samples.jsonl, {out}/final/", f"python plot.py {out}",
                  f"python eval.py --model {out}/final"]:
        assert words in printed, words


def test_plot_draws_the_heldout_panel(run, capsys):
    out, _ = run
    assert plot.main([out]) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy (during training)" in printed and "held-out replies (during training)" in printed
    assert os.path.isfile(os.path.join(out, "curves.png"))


def test_heldout_questions_are_the_runs_own_heldout_images(synthetic):
    cfg = grpo.resolve(grpo.Config(eval_questions=7, out="unused"))
    train_set, held_out = grpo.load_data(cfg)
    questions = watch.heldout_questions(held_out, cfg, world=2)
    assert len(questions) == 6  # a multiple of the ranks: every rank makes the same generate calls
    assert not {s.image for s in train_set} & {s.image for s in questions}
    assert len({s.category for s in questions}) > 1  # spread, not the json's first questions
    assert watch.heldout_questions(held_out, cfg, world=2) == questions  # fixed: the same sample at every measure


def test_heldout_is_asked_and_scored_as_eval_py_does(synthetic):
    root, path = synthetic
    sample = next(s for s in data.load_mmad(path, root) if len(s.options) == 4)
    asked = eval.asked(sample)
    assert (asked.options, asked.answer) == eval.shuffle_options(sample.options, sample.answer, 0,
                                                                 f"{sample.image}\n{sample.question}")
    gold_text = asked.options[asked.answer]
    r = eval.record(asked, f"<think>It is {gold_text} so the answer is {asked.answer}.</think>"
                            f"<answer>{asked.answer}</answer>")
    assert r["predicted"] == asked.answer and eval.consistency([r])["Overall"] == 100.0
    assert eval.summarize([r])["Average"]["Average"] == 100.0


def test_summary_takes_the_first_and_last_tenth():
    cfg = grpo.resolve(grpo.Config(out="runs/x", steps=20))
    rows = [{"step": i, "reward": i / 20, "reward/accuracy": 0.0, "reward/roam": i / 20, "accuracy": 0.5,
             "consistency": 0.5, "seconds": 1.0} for i in range(1, 21)]
    seconds = {"wall": 30.0, "steps": 20.0, "held-out": 0.0}
    text = watch.summary_lines(cfg, rows, [], 0, 2, seconds)
    assert "mean of steps 1-2 -> 19-20" in text and "reward 0.075 -> 0.975" in text  # (1+2)/40, (19+20)/40
    assert "held-out, " not in text
    assert "wall time 30 s (after imports): steps 20 s, held-out 0 s, start-up and checkpoints 10 s" in text
    held = {"heldout_accuracy": 30.0, "heldout_anomaly_detection": 50.0, "heldout_consistency": 90.0,
            "heldout_top_letter": 40.0}
    text = watch.summary_lines(cfg, rows, [{"step": 0, **held}, {"step": 20, **held}], 40, 1, seconds)
    assert "greedy, 0-shot, step 0 -> 20:" in text and "macro accuracy 30.0% -> 30.0%" in text
    # stopped (Ctrl-C) before the next held-out measure: the one measure, not "step 0 -> 0"
    text = watch.summary_lines(cfg, rows[:3], [{"step": 0, **held}], 40, 1, seconds)
    assert "greedy, 0-shot, step 0:" in text and "macro accuracy 30.0%, Anomaly" in text


def test_resume_drops_the_samples_it_will_replay(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "samples.jsonl", "w") as f:
        f.writelines(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 3))
        f.write('{"step": 4, "te')  # killed mid-line
    cfg = grpo.resolve(grpo.Config(out=str(out), eval_every=0))
    import torch
    w = watch.Watch(cfg, 1, torch.device("cpu"), [], [], 0.0)
    assert w.begin(3, None, None, None) == []  # --resume from step 2's checkpoint: steps 3.. run again
    assert [s["step"] for s in lines(out / "samples.jsonl")] == [1, 2]


@pytest.mark.parametrize("flag", ["--eval-every", "--log-samples", "--eval-questions"])
def test_bad_watch_flags_exit_2_with_one_line(flag, synthetic, tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        grpo.main([flag, "-1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("grpo.py: error: ") and flag in err and "Traceback" not in err
