"""cli.py: every field shape becomes the flag a user expects, only given flags come back, mistakes are one line."""
import dataclasses
import os
import subprocess
import sys

import pytest

import cli


@dataclasses.dataclass
class Config:
    path: str = cli.option(cli.REQUIRED, "a positional argument", positional=True)
    out: str = cli.option(cli.REQUIRED, "a required flag")
    steps: int | None = cli.option(None, "an optional int")
    size: tuple[int, int] = cli.option((1000, 800), "two values", metavar=("W", "H"))
    template: list[str] = cli.option([], "a repeatable flag")
    norm: str = cli.option("seq", "one of a few", choices=["seq", "token"])
    shuffle: bool = cli.option(True, "a switch")


def parse(argv):
    p = cli.parser("test", prog="t.py")
    cli.add_flags(p, Config)
    return cli.given(p, argv)


def test_each_field_shape_becomes_its_flag():
    given = parse(["in.json", "--out", "o", "--steps", "3", "--size", "640", "480", "--template", "a.png",
                   "--template", "b.png", "--norm", "token", "--no-shuffle"])
    assert given == dict(path="in.json", out="o", steps=3, size=[640, 480], template=["a.png", "b.png"],
                         norm="token", shuffle=False)
    assert parse(["in.json", "--out", "o"]) == dict(path="in.json", out="o")  # only what the user said
    cfg = Config(**parse(["in.json", "--out", "o"]))
    assert (cfg.steps, cfg.size, cfg.template, cfg.norm, cfg.shuffle) == (None, (1000, 800), [], "seq", True)
    assert Config("a", "b").template is not Config("a", "b").template  # a fresh list per config


@pytest.mark.parametrize("argv, words", [(["in.json"], "--out"), (["--out", "o"], "PATH"),
                                         (["in.json", "--out", "o", "--steps", "x"], "--steps"),
                                         (["in.json", "--out", "o", "--norm", "mean"], "--norm"),
                                         (["in.json", "--out", "o", "--size", "640"], "--size")])
def test_usage_mistakes_are_one_line_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("t.py: error: ") and err.count("\n") == 1 and words in err


def test_subcommand_mistakes_are_one_line_too(capsys):
    p = cli.parser("test", prog="t.py")
    cli.add_flags(p.add_subparsers(dest="command", required=True).add_parser("run"), Config)
    with pytest.raises(SystemExit) as e:
        p.parse_args(["run", "in.json"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("t.py run: error: ") and err.count("\n") == 1


def test_user_errors_print_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e, cli.user_errors("t.py"):
        raise FileNotFoundError("no such file: x.json; pass --data")
    assert e.value.code == 2 and capsys.readouterr().err == "t.py: error: no such file: x.json; pass --data\n"
    with pytest.raises(KeyError), cli.user_errors("t.py"):  # a bug is not the user's to fix: its traceback stays
        raise KeyError("bug")


def test_a_closed_pipe_is_silent_exit_141():
    # `eval.py --compare a b | head -1`: the reader stops early. Before, OSError's path printed
    # "script.py: error: [Errno 32] Broken pipe" and exited 2, as if the command had failed.
    script = "import cli\nwith cli.user_errors('script.py'):\n    for i in range(10 ** 6):\n        print('row', i)\n"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"row 0\n"
    proc.stdout.close()  # what head does after its line
    assert proc.wait(timeout=60) == 141 and proc.stderr.read() == b""


def test_parse_options():
    assert cli.parse_options("A=Yes.,B=No.") == {"A": "Yes.", "B": "No."}
    assert cli.parse_options("A=Red, green,B=Blue") == {"A": "Red, green", "B": "Blue"}
    assert cli.parse_options("") == {}
    with pytest.raises(ValueError, match="A=Yes"):
        cli.parse_options("yes or no")
