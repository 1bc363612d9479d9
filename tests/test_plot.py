"""plot.py: one PNG of a run's curves from its metrics.jsonl, panels only for what was logged."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import plot  # noqa: E402

pytest.importorskip("matplotlib")


def fake_run(folder, rewards=("accuracy", "roam"), heldout=True, steps=6):
    os.makedirs(folder)
    with open(os.path.join(folder, "metrics.jsonl"), "w") as f:
        for step in range(1, steps + 1):
            row = {"step": step, "reward": 0.1 * step, "accuracy": 0.3 + 0.05 * step, "consistency": 0.5,
                   "kl": 0.01 * step, "zero_std_fraction": 0.2, **{f"reward/{r}": 0.05 * step for r in rewards}}
            if heldout and step % 3 == 0:
                row.update(heldout_accuracy=30.0 + step, heldout_consistency=90.0)
            f.write(json.dumps(row) + "\n")
        f.write('{"step": 7, "rew')  # a run still writing: a half line must not break the plot
    return folder


def test_one_run_writes_a_png_with_every_logged_panel(tmp_path, capsys):
    run = fake_run(str(tmp_path / "grpo"))
    assert plot.main([run, "--smooth", "3"]) == 0
    png = os.path.join(run, "curves.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    for panel in ["reward (total)", "reward part: accuracy", "reward part: roam", "consistency", "KL", "held-out"]:
        assert panel in printed


def test_several_runs_and_missing_parts(tmp_path):
    roam_run = fake_run(str(tmp_path / "roam"))
    classical = fake_run(str(tmp_path / "classical"), rewards=("accuracy", "format"), heldout=False)
    out = str(tmp_path / "compare.png")
    runs = {"roam": plot.read_metrics(roam_run), "classical": plot.read_metrics(classical)}
    drawn = plot.draw(runs, out)
    assert os.path.getsize(out) > 1000
    assert {"reward part: roam", "reward part: format", "held-out accuracy (during training)",
            "held-out replies (during training)"} <= set(drawn)
    assert len(runs["roam"]) == 6  # the half-written line is skipped


def test_smooth_is_a_trailing_mean():
    assert plot.smooth([0, 2, 4, 6], 2) == [0, 1, 3, 5]
    assert plot.smooth([1, 2], 1) == [1, 2]


def exit_code(argv):
    with pytest.raises(SystemExit) as e:
        plot.main(argv)
    return e.value.code


def test_errors_are_one_line(tmp_path, capsys):
    assert exit_code([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plot.py: error: ") and "no metrics.jsonl" in err and len(err.strip().splitlines()) == 1
    run = fake_run(str(tmp_path / "a"))
    assert exit_code([run, "--labels", "x,y"]) == 2 and "--labels" in capsys.readouterr().err
    assert exit_code([run, "--smooth", "0"]) == 2 and "--smooth" in capsys.readouterr().err
    assert exit_code([]) == 2 and "RUN" in capsys.readouterr().err  # cli's one line, not argparse's usage block


def test_flags_come_from_the_config(tmp_path, capsys):
    a, b = fake_run(str(tmp_path / "a")), fake_run(str(tmp_path / "b"))
    out = str(tmp_path / "two.png")
    flags = ["--out", out, "--labels", "roam,classical", "--smooth", "2", "--title", "t", "--dpi", "60"]
    assert plot.main([a, b, *flags]) == 0
    assert os.path.getsize(out) > 1000 and capsys.readouterr().out.startswith(f"wrote {out}: ")


def test_foreign_or_broken_metrics_are_skipped_or_one_line(tmp_path, capsys):
    """Rows grpo.py never writes (a string, a list, no step, a step that is not an integer, JSON nested past the
    recursion limit) were tracebacks (AttributeError, KeyError, TypeError, RecursionError); they are skipped like a
    torn line. A binary file, a folder or a non-PNG --out, a huge --dpi: one line naming it, exit 2."""
    run = fake_run(str(tmp_path / "a"))
    good = open(os.path.join(run, "metrics.jsonl")).read()
    junk = ['"a"', "[1]", '{"reward": 1}', '{"step": "one"}', '{"step": null}', "[" * 100_000 + "]" * 100_000]
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.write("\n".join(junk) + "\n" + good)
    assert plot.main([run, "--out", str(tmp_path / "a.png")]) == 0 and os.path.getsize(tmp_path / "a.png") > 1000
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.write("\n".join(junk) + "\n")
    assert exit_code([run]) == 2 and "holds no metrics rows" in capsys.readouterr().err
    with open(os.path.join(run, "metrics.jsonl"), "wb") as f:
        f.write(bytes(range(256)) * 10)
    assert exit_code([run]) == 2 and "metrics.jsonl: not a text file" in capsys.readouterr().err
    other = fake_run(str(tmp_path / "b"))
    for flags, words in [(["--out", str(tmp_path)], "pass a file name ending in .png"),
                         (["--out", str(tmp_path / "c.txt")], "pass a file name ending in .png"),
                         (["--dpi", "100000"], "--dpi 100000"),
                         (["--out", str(tmp_path / "afile" / "c.png")], "is a file")]:
        (tmp_path / "afile").write_text("x")
        assert exit_code([other, *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.startswith("plot.py: error: ") and words in err and len(err.strip().splitlines()) == 1, err
