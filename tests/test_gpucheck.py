"""gpucheck.py, the one-GPU check of the planner, run on CPU on a small config: the command itself is never untested
(the plan-vs-measured comparison needs CUDA memory and is skipped here)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import gpucheck  # noqa: E402
import plan  # noqa: E402


def test_cut_depth_holds_one_shard_of_the_3b():
    # 3.755 B params over 4 GPUs: a shard of ~0.94 B. The 3B's root (embedding = tied lm_head, patch merger) is
    # ~0.35 B, so the cut keeps ~17% of the 36 decoder layers and 32 vision blocks.
    config = plan.qwen25_vl_3b_config()
    cut, target = gpucheck.cut_depth(config, 4)
    n = plan.count_units(cut, 1)["params"]
    assert abs(n - target) / target < 0.05, (n, target)
    assert (cut.text_config.hidden_size, cut.vision_config.hidden_size) == (2048, 1280)  # the widths stay
    assert 4 <= cut.text_config.num_hidden_layers <= 8 and 3 <= cut.vision_config.depth <= 8
    assert all(i < cut.vision_config.depth for i in cut.vision_config.fullatt_block_indexes)
    assert config.text_config.num_hidden_layers == 36  # the original is left alone


def test_gpucheck_runs_end_to_end_on_cpu(tiny, synthetic, tmp_path):
    cmd = [sys.executable, "gpucheck.py", "--model", "tiny-config", "--steps", "2", "--prompts", "1",
           "--group-size", "2", "--max-completion", "8", "--shots", "1", "--image-size", "112x84",
           "--out", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = r.stdout
    for words in ("gpu check: tiny-config cut to", "1 prompts x G=2, 2 image(s) 112x84", "flash-attn in the vision "
                  "tower: no", "plan (one-rank FSDP2", "measured: peak", "comparison skipped"):
        assert words in out, (words, out)
    assert os.listdir(tmp_path / "run") == ["metrics.jsonl"]  # the run's weights are not left behind


def test_gpucheck_bad_model_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        gpucheck.main(["--model", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("gpucheck.py: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value", [("--steps", 0), ("--prompts", 0), ("--group-size", 1), ("--shard-of", 0),
                                         ("--image-size", "10x"), ("--image-size", "0x0")])
def test_gpucheck_bad_flag_is_one_line_before_anything_is_written(flag, value, capsys, tmp_path):
    # --steps 0 was a traceback (exit 1) after the model and the resized data were written
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        gpucheck.main(["--model", "tiny-config", "--image-size", "112x84", flag, str(value), "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f"gpucheck.py: error: {flag} {value}: ") and err.count("\n") == 1, err
    assert not out.exists()


def test_gpucheck_without_cuda_refuses_the_big_shapes_at_once(capsys, tmp_path, monkeypatch):
    # it used to write ~1.8 GB and train a 0.93 B-parameter model on CPU for many minutes
    monkeypatch.setattr(gpucheck.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        gpucheck.main(["--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("gpucheck.py: error: --model qwen2.5-vl-3b: ") and "--model tiny-config" in err, err
    assert not (tmp_path / "out").exists()
