"""Crash recovery of a run folder: each test leaves the folder as a crash leaves it (kill -9 mid-save, a power loss
that tore a file, a second writer) and asserts that the same command, or --resume, then finishes with nothing lost
and final/ written, or refuses in one line that names the culprit and the fix.

One short real run (3 steps, a checkpoint after each) is made once per module; every test works on a copy of it.
A resumed run replays exactly (runs.py), so a recovered run must end with the uninterrupted run's metrics and
bit-identical final weights.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import grpo
import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 prompts x G = 2, short completions: about a second a step on 2 idle cores
FLAGS = ["--prompts-per-step", "2", "--group-size", "2", "--max-completion", "24", "--warmup-steps", "0",
         "--save-every", "1", "--keep", "3", "--eval-every", "0"]  # held-out rows: tests/test_watch.py
REPLAYED = ("reward", "accuracy", "consistency", "completion_length", "zero_std_fraction", "kl")


def run_main(argv):
    try:
        return grpo.main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def rows(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def same_rows(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b):
        assert {k: x[k] for k in REPLAYED} == {k: y[k] for k in REPLAYED}, x["step"]
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)


def same_weights(a, b):
    wa, wb = load_file(os.path.join(a, "model.safetensors")), load_file(os.path.join(b, "model.safetensors"))
    assert set(wa) == set(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def one_error_line(rc, err, culprit):
    lines = [line for line in err.splitlines() if "error:" in line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    assert str(culprit) in lines[0], (culprit, lines[0])
    return lines[0]


def finished(folder, steps=3):
    """Everything a finished run holds, and nothing a crash left."""
    names = set(os.listdir(folder))
    assert "final" in names and f"step-{steps:06d}" in names, names
    assert not [n for n in names if n.startswith(".tmp-") or n.endswith((".old", ".tmp")) or n == runs.LOCK], names
    assert runs.checkpoint_problem(os.path.join(folder, f"step-{steps:06d}")) is None


@pytest.fixture(scope="module")
def done(tmp_path_factory, synthetic):
    """The uninterrupted run: step-000001..3/, final/, metrics.jsonl (never modified: tests copy it)."""
    out = tmp_path_factory.mktemp("crash") / "done"
    assert run_main(FLAGS + ["--steps", 3, "--out", out]) == 0
    finished(out)
    assert any(r.get("zero_std_fraction", 1) < 1 for r in rows(out)), "nothing was learnt: the weights never moved"
    return str(out)


@pytest.fixture
def run(done, tmp_path):
    """A copy of the finished run to break."""
    return pathlib.Path(shutil.copytree(done, tmp_path / "run"))


def test_killed_during_the_final_save_resume_writes_final(done, run, capsys):
    """Killed while writing final/ (after step-000003/ appeared): --resume used to say "nothing to do" and final/
    never appeared. Now it is written from the last checkpoint, with no model step."""
    shutil.rmtree(run / "final")
    shutil.copytree(done + "/final", run / ".tmp-final")
    os.truncate(run / ".tmp-final" / "model.safetensors", 1000)
    assert run_main(["--resume", run]) == 0
    assert "without final/" in capsys.readouterr().err
    finished(run)
    same_weights(run / "final", done + "/final")
    same_rows(rows(run), rows(done))


def test_a_final_copied_alone_keeps_its_runs_settings(done, tmp_path):
    """final/ copied out of its run folder (how a trained model is shared) used to lose the run's settings: eval.py
    then took 1 shot and grpo.py's default draw, whatever the run's --shots, --seed, --n-images, and could score
    images it trained on. final/ keeps trainer_state.json now; --resume still takes only step-NNNNNN/ folders."""
    import eval as ev
    shared = pathlib.Path(shutil.copytree(os.path.join(done, "final"), tmp_path / "shared" / "final"))
    config = json.loads(pathlib.Path(done, "step-000003", runs.STATE).read_text())["config"]
    as_trained = (config["shots"], {"seed": config["seed"], "n_images": config["n_images"]}, "as trained", config)
    assert ev.run_settings(str(shared)) == as_trained != ev.run_settings(str(tmp_path / "elsewhere"))
    assert not (shared / "optimizer.safetensors").exists()
    assert runs.checkpoints(done) == [os.path.join(done, f"step-00000{k}") for k in (1, 2, 3)]
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        runs.newest_checkpoint(str(shared))


def test_crash_before_the_first_checkpoint_same_command_starts_over(done, tmp_path, capsys, monkeypatch):
    """kill -9 during step 1's save leaves metrics.jsonl and a half-written .tmp-step-000001/, no checkpoint: the
    same command used to say "already holds a run: --resume", and --resume "no checkpoint there"."""
    out = tmp_path / "run"
    (out / ".tmp-step-000001").mkdir(parents=True)
    (out / ".tmp-step-000001" / "config.json").write_text("{")
    (out / "metrics.jsonl").write_text(json.dumps(rows(done)[0]) + "\n")
    (out / runs.LOCK).write_text("12345\n")  # the dead run's lock file: nobody holds the lock
    command = FLAGS + ["--steps", 1, "--out", out]
    # --resume has nothing to resume from, and says what to do instead
    one_error_line(run_main(["--resume", out]), capsys.readouterr().err, f"--resume {out}: no checkpoint there yet")
    # an exception inside step 1 (before any row is written) leaves the same kind of folder
    def fail(*args, **kwargs):
        raise RuntimeError("step 1 failed")
    monkeypatch.setattr(grpo, "train_step", fail)
    with pytest.raises(RuntimeError):
        run_main(command)
    monkeypatch.undo()
    capsys.readouterr()
    assert run_main(command) == 0
    assert "no checkpoint (a run that stopped before its first save): starting over" in capsys.readouterr().err
    finished(out, steps=1)
    same_rows(rows(out), rows(done)[:1])
    same_weights(out / "step-000001", done + "/step-000001")


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_reclaimed(done, run, capsys):
    """A second --resume while the first still trains (or orphaned torchrun workers) used to interleave into one
    metrics.jsonl. The holder is another process here; kill -9 then frees the lock (its file stays)."""
    holder = subprocess.Popen([sys.executable, "-c", "import runs, sys, time; runs.lock(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(300)", str(run)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = (run / "metrics.jsonl").read_bytes()
        line = one_error_line(run_main(["--resume", run, "--steps", 4]), capsys.readouterr().err, f"--out {run}")
        assert f"pid {holder.pid}" in line and "kill" in line
        assert (run / "metrics.jsonl").read_bytes() == before and not (run / "step-000004").exists()
    finally:
        holder.kill()  # SIGKILL: no atexit, the lock file stays behind, unlocked
        holder.wait()
    assert (run / runs.LOCK).exists()
    assert run_main(["--resume", run]) == 0
    assert "nothing to do" in capsys.readouterr().err
    finished(run)


def test_resume_of_a_run_training_before_its_first_save_says_so(tmp_path, capsys):
    """It used to say that the run had stopped before its first save and should be started over: a live run's
    folder, with a second writer about to start."""
    out = tmp_path / "live"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import runs, sys, time; runs.lock(sys.argv[1]); "
                               "print('locked', flush=True); time.sleep(300)", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_error_line(run_main(["--resume", out]), capsys.readouterr().err, f"pid {holder.pid}")
        assert "training there" in line and "start it over" not in line
    finally:
        holder.kill()
        holder.wait()
    one_error_line(run_main(["--resume", out]), capsys.readouterr().err, "without --resume")  # a dead run's folder


def test_resume_into_an_out_holding_another_run_is_refused(done, run, tmp_path, capsys):
    other = pathlib.Path(shutil.copytree(done, tmp_path / "other"))
    listing, metrics = sorted(os.listdir(other)), (other / "metrics.jsonl").read_bytes()
    one_error_line(run_main(["--resume", run, "--out", other]), capsys.readouterr().err, f"--out {other}")
    assert sorted(os.listdir(other)) == listing and (other / "metrics.jsonl").read_bytes() == metrics
    # into a new folder: it starts with the resumed run's rows, and run/ is left as it was
    fresh = tmp_path / "fresh"
    assert run_main(["--resume", run, "--out", fresh]) == 0
    same_rows(rows(fresh), rows(done))
    same_weights(fresh / "final", done + "/final")
    assert sorted(os.listdir(run)) == sorted(os.listdir(done))


def test_torn_last_metrics_line_is_dropped_and_its_step_redone(done, run, capsys):
    """A power loss during step 3: metrics.jsonl ends in half a line, the newest checkpoint is step 2."""
    shutil.rmtree(run / "step-000003")
    shutil.rmtree(run / "final")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[:len(text) - len(text.splitlines()[-1]) // 2 - 1])
    assert run_main(["--resume", run]) == 0
    assert "metrics.jsonl: dropped 1 torn line(s) (3)" in capsys.readouterr().err
    finished(run)
    same_rows(rows(run), rows(done))
    same_weights(run / "final", done + "/final")


def test_damaged_newest_checkpoint_falls_back_to_the_previous(done, run, capsys):
    """A zero-byte optimizer.safetensors in the newest checkpoint (unsynced writes lost): --resume used to crash.
    It resumes from step 2, saying so, redoes step 3, and ends as the uninterrupted run did."""
    shutil.rmtree(run / "final")
    (run / "step-000003" / "optimizer.safetensors").write_bytes(b"")
    assert run_main(["--resume", run]) == 0
    err = capsys.readouterr().err
    assert f"{run}/step-000003 is damaged ({run}/step-000003/optimizer.safetensors is truncated (0 bytes)); " \
           f"resuming from {run}/step-000002 instead" in err
    finished(run)
    same_rows(rows(run), rows(done))
    same_weights(run / "final", done + "/final")


@pytest.mark.parametrize("damage, why", [
    (lambda c: os.truncate(c / "model.safetensors", os.path.getsize(c / "model.safetensors") // 2),
     "model.safetensors is truncated or damaged"),
    (lambda c: (c / "model.safetensors").write_bytes(b""), "model.safetensors is truncated (0 bytes)"),
    (lambda c: (c / "optimizer.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      "),
     "optimizer.safetensors has a damaged header"),
    (lambda c: (c / runs.STATE).write_text('{"step": 3, "con'), "trainer_state.json: not readable"),
    (lambda c: (c / runs.STATE).write_text('{"step": "3", "config": {}}'), "not a trainer state"),
    (lambda c: (c / "config.json").write_text(""), "config.json or its weights index not readable"),
], ids=["model-half", "model-empty", "optimizer-header", "state-torn", "state-step-string", "config-empty"])
def test_each_kind_of_damage_is_seen_and_skipped(done, run, damage, why):
    """Header checks only, no model: the newest checkpoint is passed over for the previous one, naming the file."""
    damage(run / "step-000003")
    checkpoint, damaged = runs.newest_checkpoint(str(run))
    assert checkpoint == f"{run}/step-000002" and [d for d, _ in damaged] == [f"{run}/step-000003"]
    assert why in damaged[0][1]
    assert runs.saved_config(str(run)) == json.loads((run / "step-000002" / runs.STATE).read_text())["config"]


def test_corrupt_trainer_state_of_the_only_checkpoint_names_the_file(done, run, capsys):
    for name in ("step-000002", "step-000003", "final"):
        shutil.rmtree(run / name)
    (run / "step-000001" / runs.STATE).write_text('{"step": 1,\n')
    one_error_line(run_main(["--resume", run]), capsys.readouterr().err, f"{run}/step-000001/trainer_state.json")


@pytest.mark.parametrize("flags, culprit", [(["--rewards", "accuracy,format"], "--rewards accuracy,format"),
                                            (["--group-size", "4", "--lr", "0.1"], "--lr 0.1")])
def test_resume_refuses_other_settings(done, run, capsys, flags, culprit):
    """A resumed run continues the checkpoint's run: another reward, G or lr would be another run. Before, the
    rewards changed silently and the summary crashed on a reward part the earlier rows lacked (KeyError)."""
    before = sorted(os.listdir(run))
    line = one_error_line(run_main(["--resume", run, "--steps", "4", *flags]), capsys.readouterr().err, culprit)
    assert "--model" in line and sorted(os.listdir(run)) == before
