"""Shared by the bad-input tests (test_bad_inputs.py: question files, images, data.py build; test_bad_flags.py:
model folders, flags, run folders). Tried as a demanding user would: every bad input must end the CLI with exit
status 2 and exactly ONE `error:` line on stderr that names the culprit (the file, folder or flag), never a
traceback; for a sample of cases the corrected command then runs.

Table-driven and in-process: each case calls a script's `main(argv)` (no subprocess per case), with capsys. Almost
every case fails before any model loads; they share one small MVTec-layout folder (the `world` fixture) and one copy
of the tiny model. Add a case to a test file by writing a function decorated with its @case that returns
Case(main, argv, culprit[, fix]); `fix` repairs what the case broke and returns the argv of the corrected command,
which must then exit 0.
"""
import copy
import json
import os
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image

import data
import mvtec
import tiny


class Case(NamedTuple):
    main: Callable
    argv: list
    culprit: str                     # must appear in the one error line
    fix: Callable | None = None      # () -> argv of the corrected command (exit 0 expected)


def registry(cases):
    """A @case decorator that files each case function into `cases` under its name."""
    def case(fn):
        cases[fn.__name__] = fn
        return fn
    return case


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
def png(path, seed, size=32, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)


def mvtec_folder(folder):
    """folder/cat/{train/good, test/good, test/crack, ground_truth/crack}: 6 tiny PNGs, MVTec-AD layout."""
    for i in range(2):
        png(f"{folder}/cat/train/good/{i:03d}.png", i)
    png(f"{folder}/cat/test/good/000.png", 10)
    png(f"{folder}/cat/test/crack/000.png", 11)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 20:30] = 255
    os.makedirs(f"{folder}/cat/ground_truth/crack", exist_ok=True)
    Image.fromarray(mask).save(f"{folder}/cat/ground_truth/crack/000_mask.png")


class World(NamedTuple):
    root: str                        # data root: holds ds/ (MVTec layout)
    json: str                        # good questions for it
    records: dict
    model: str                       # the tiny model folder (never modified: cases copy it)


def make_world(tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    root = base / "root"
    mvtec_folder(root / "ds")
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


def ask(w, image, *extra):
    return ["--image", image, "--model", w.model, "--max-new-tokens", "4", *extra]


def check(c, tmp_path, capsys):
    """Run case `c`: one error line naming its culprit, no .tmp left behind, and its fix (if any) then runs."""
    rc = run_main(c.main, c.argv)
    out, err = capsys.readouterr()
    assert_one_error_line(rc, err, c.culprit)
    assert not [p for p in tmp_path.rglob("*.tmp")], "a failed command left a .tmp file behind"
    if c.fix:
        argv = c.fix()
        rc = run_main(c.main, argv)
        out, err = capsys.readouterr()
        assert rc in (0, None) and "error:" not in err, (argv, err)
