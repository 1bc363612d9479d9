"""Bad model folders, flags and run folders: one error line each, exit 2 (see badinputs.py)."""
import json
import os
import shutil

import pytest

import anomalyr1
import data
from badinputs import NORMAL, Case, ask, check, make_world, mmad, registry, turn0

CASES = {}
case = registry(CASES)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory)


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


def _edit_text_config(f, **changes):
    config = json.loads((f / "config.json").read_text())
    config["text_config"].update(changes)
    (f / "config.json").write_text(json.dumps(config))


def _layers(f, n):  # a config.json for n decoder layers, consistent in itself
    _edit_text_config(f, num_hidden_layers=n, layer_types=["full_attention"] * n)


@case
def model_config_more_layers_than_weights(tmp, w):  # transformers filled the extra layer with random weights
    return model_case(tmp, w, lambda f: _layers(f, 3), "{folder}: config.json does not match the weights")


@case
def model_config_fewer_layers_than_weights(tmp, w):  # transformers dropped the weights' second layer
    return model_case(tmp, w, lambda f: _layers(f, 1), "{folder}: config.json does not match the weights")


@case
def model_config_other_shapes(tmp, w):  # transformers printed a 10-line report, then re-initialised them
    return model_case(tmp, w, lambda f: _edit_text_config(f, intermediate_size=512),
                      "{folder}: config.json does not match the weights")


@case
def model_config_contradicts_itself(tmp, w):  # was huggingface_hub's StrictDataclassClassValidationError traceback
    return model_case(tmp, w, lambda f: _edit_text_config(f, num_hidden_layers=3),
                      "{folder}: cannot load this Qwen2.5-VL folder")


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
def compare_with_answering_flags(tmp, w):  # --limit and --no-shuffle did nothing, without a word
    import eval as ev
    (tmp / "a").mkdir()
    (tmp / "a" / "results.json").write_text(json.dumps(RESULTS))
    good = ["--compare", tmp / "a" / "results.json", tmp / "a" / "results.json"]
    return Case(ev.main, good + ["--limit", "5", "--no-shuffle"], "drop --limit --no-shuffle", lambda: good)


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


# ----------------------------------------------------------------------------------------- empty and unwritable
EMPTY = {"grpo_out": ("grpo", ["--out", ""]), "grpo_resume": ("grpo", ["--resume", ""]),
         "eval_out": ("eval", ["--out", ""]), "eval_compare": ("eval", ["--compare", ""]),
         "synth_out": ("data", ["synth", ""]), "ask_image": ("anomalyr1", ["--image", ""]),
         "plot_run": ("plot", [""]), "gpucheck_out": ("gpucheck", ["--out", ""])}


def _empty_case(key):
    def make(tmp, w):
        import importlib
        script, argv = EMPTY[key]
        return Case(importlib.import_module(script).main, argv, "empty; pass a value")
    make.__name__ = f"empty_{key}"
    return make


for _key in EMPTY:  # '' used to mean the default: --out '' wrote runs/grpo, synth '' wrote into the working folder
    case(_empty_case(_key))


@case
def eval_out_unwritable(tmp, w):
    """Was '[Errno 2] No such file or directory: /proc/evalx', naming no flag."""
    import eval as ev
    argv = eval_argv(w, w.json, tmp)
    bad = [a if a != tmp / "eval" else "/proc/evalx" for a in argv]
    return Case(ev.main, bad, "--out /proc/evalx", lambda: argv)


@case
def ask_out_not_png(tmp, w):
    """Was matplotlib's 'unknown file extension: .txt' after the answer, naming no flag."""
    return Case(anomalyr1.main, ask(w, os.path.join(w.root, NORMAL), "--out", tmp / "o.txt"),
                f"--out {tmp / 'o.txt'}: pass a file name ending in .png")


@case
def gpucheck_out_is_file(tmp, w):
    """Was a NotADirectoryError traceback."""
    import gpucheck
    (tmp / "afile").write_text("x")
    return Case(gpucheck.main, ["--model", "tiny-config", "--out", tmp / "afile"], "afile is a file")


@case
def gpucheck_tolerance_nan(tmp, w):
    import gpucheck
    return Case(gpucheck.main, ["--model", "tiny-config", "--tolerance", "nan"], "--tolerance nan")


@case
def plan_margin_over_the_gpu(tmp, w):
    """Printed a budget of -52 GiB."""
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--margin-gb", 100], "--margin-gb 100")


@case
def plan_prompts_not_a_multiple_of_the_gpus(tmp, w):
    """Planned a setting grpo.py then refused."""
    import plan
    return Case(plan.main, ["--model", "tiny-config", "--gpus", 4, "--prompts-per-step", 3], "--prompts-per-step 3",
                lambda: ["--model", "tiny-config", "--gpus", 4, "--prompts-per-step", 4])


@case
def grpo_rewards_empty_name(tmp, w):
    """'accuracy,,roam' was stored as such; --resume with 'accuracy,roam' was then refused as another reward."""
    import grpo
    argv = grpo_argv(w, w.json, tmp) + SMALL_RUN
    return Case(grpo.main, argv + ["--rewards", "accuracy,,roam"], "--rewards 'accuracy,,roam': an empty name",
                lambda: argv + ["--rewards", "accuracy,roam"])


@case
def grpo_shots_over_the_templates(tmp, w):
    """--shots 9 trained with the questions' 2 templates and recorded shots 9."""
    return grpo_flag_case(tmp, w, "--shots", 9)


@case
def compare_accuracy_nan(tmp, w):
    return compare_case(tmp, {"ds": {"Average": float("nan")}, "Average": {"Average": 1.0}})


@case
def compare_accuracy_over_100(tmp, w):
    return compare_case(tmp, {"ds": {"Average": 150.0}, "Average": {"Average": 1.0}})


@case
def eval_trainer_state_torn(tmp, w):
    """A torn trainer_state.json beside a checkpoint was skipped: eval.py took 1 shot, the default data and draw."""
    import eval as ev
    import shutil
    shutil.copytree(w.model, tmp / "run" / "final")
    (tmp / "run" / "final" / "trainer_state.json").write_text('{"step": 1, "conf')
    argv = eval_argv(w, w.json, tmp)
    argv[argv.index("--model") + 1] = tmp / "run" / "final"
    return Case(ev.main, argv, "final/trainer_state.json: not a grpo.py run state")


# ----------------------------------------------------------------------------------------- the harness
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line(name, world, tmp_path, capsys):
    check(CASES[name](tmp_path, world), tmp_path, capsys)


def test_enough_cases():
    assert len(CASES) >= 30
