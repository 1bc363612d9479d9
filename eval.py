"""eval.py: the MMAD benchmark protocol (paper §4.2) and its tables (paper Tables 2, 3, 5).

    python eval.py --model tiny                                   # synthetic set, held-out images
    python eval.py --model runs/ckpt --data mmad.json --root MMAD --split all --shots 1
    python eval.py --compare runs/eval/base/results.json runs/eval/trained/results.json

One question per generate row (MMAD asks one per turn), options reshuffled with a seed and the gold
letter remapped (§4.2: "the evaluation program randomizes the answer choices"), greedy decoding.
Answers are appended to OUT/answers.jsonl as they come, so a killed run resumes where it stopped.
"""
import dataclasses
import datetime
import difflib
import hashlib
import json
import os
import random
import re
import sys
from statistics import fmean

import cli

# The 7 MMAD subtasks in table order; FOLD maps MMAD's "Object Structure"/"Object Details" to "Object Analysis".
# data.py imports only numpy/PIL; anomalyr1 (torch, transformers) and roam load lazily where needed.
from data import FOLD, QUESTION_TYPES, write_atomic


# ----------------------------------------------------------------------------- scoring

def is_normal(image: str) -> bool:
    # A path component, not a substring: "GoodsAD/drink_goods/..." is not a normal image.
    return "good" in image.replace("\\", "/").split("/")


def dataset_of(image: str) -> str:
    return image.replace("\\", "/").split("/")[0]  # an MMAD key starts with its dataset: "DS-MVTec/bottle/..."


UNANSWERED = ("wrong", "drop")


def summarize(records, unanswered="wrong") -> dict:
    """{dataset: {subtask: accuracy %, ..., "Average": %}, ..., "Average": {...}}: the paper's Tables 2, 3, 5.

    unanswered="wrong": predicted None counts as wrong (a model that fails to answer is not flattered).
    unanswered="drop": MMAD's published-table convention, the question leaves the denominator. (MMAD's
    script removes it from the list it is looping over, which also skips the record after each removed
    one; here only the unanswered question goes.) "Anomaly Detection" = mean of the accuracies on normal
    and on defective images (Table 2's caption), or the one side present. A subtask a dataset lacks is
    absent from its dict and its "Average" is over the rest; the "Average" row is, per subtask, the mean
    over the datasets that have it, and its "Average" the mean of the datasets' Averages (macro average,
    §4.2). Other question types (e.g. "Defect Grounding") are ignored."""
    if unanswered not in UNANSWERED:
        raise ValueError(f"unanswered={unanswered!r}: pass one of {', '.join(UNANSWERED)}")
    tally = {}  # dataset -> subtask -> side ("all" | "normal" | "defect") -> [right, total]
    for r in records:
        kind = FOLD.get(r["question_type"], r["question_type"])
        if kind not in QUESTION_TYPES or (unanswered == "drop" and r["predicted"] is None):
            continue
        dataset = dataset_of(r["image"])
        side = "all" if kind != "Anomaly Detection" else ("normal" if is_normal(r["image"]) else "defect")
        count = tally.setdefault(dataset, {}).setdefault(kind, {}).setdefault(side, [0, 0])
        count[0] += r["predicted"] is not None and r["predicted"] == r["correct_answer"]
        count[1] += 1
    summary = {}
    for dataset, kinds in tally.items():
        row = {k: fmean([100.0 * right / total for right, total in kinds[k].values()])
               for k in QUESTION_TYPES if k in kinds}
        row["Average"] = fmean(list(row.values()))
        summary[dataset] = row
    rows = list(summary.values())
    average = {k: fmean([row[k] for row in rows if k in row])
               for k in QUESTION_TYPES if any(k in row for row in rows)}
    if rows:
        average["Average"] = fmean([row["Average"] for row in rows])
    summary["Average"] = average
    return summary


def consistency(records) -> dict:
    """Reasoning/answer consistency, what ROAM trains (§3.3): per subtask and "Overall", the % of well-formed
    replies whose reasoning concludes the option they answer (roam.judge, the definition grpo.py logs), with
    "well_formed" and "replies" counted. A subtask with no well-formed reply is absent."""
    import roam
    tally = {}  # subtask | "Overall" -> [consistent, well formed]
    replies = 0
    for r in records:
        kind = FOLD.get(r["question_type"], r["question_type"])
        if kind not in QUESTION_TYPES or not r.get("options"):
            continue
        replies += 1
        j = roam.judge(r.get("output") or "", r["correct_answer"], r["options"])
        if j["format"]:
            for key in (kind, "Overall"):
                count = tally.setdefault(key, [0, 0])
                count[0] += j["consistency"]
                count[1] += 1
    out = {k: 100.0 * tally[k][0] / tally[k][1] for k in QUESTION_TYPES + ["Overall"] if k in tally}
    return {**out, "well_formed": tally.get("Overall", [0, 0])[1], "replies": replies}


def datasets(summary) -> list:
    """The dataset rows of a summary or results.json (skips "Average" and "_"-prefixed keys such as "_meta")."""
    return [k for k in summary if k != "Average" and not k.startswith("_")]


def detection_errors(records) -> dict:
    """Counts beside the accuracy table: questions scored, unanswered, and Anomaly Detection's Overkill (% of normal
    images answered "Yes." = defective) and Miss (% of defective ones "No."), each the mean of the datasets' rates as in
    MMAD's summary script (pooled, the largest dataset would set it); an unanswered one is neither. Needs `options`."""
    scored = [r for r in records if FOLD.get(r["question_type"], r["question_type"]) in QUESTION_TYPES]
    said = {}  # (side, dataset) -> option texts the model chose on its Anomaly Detection questions
    for r in scored:
        if r["question_type"] == "Anomaly Detection" and r.get("options"):
            key = ("normal" if is_normal(r["image"]) else "defect", dataset_of(r["image"]))
            said.setdefault(key, []).append((r["options"].get(r["predicted"]) or "").strip().lower().rstrip("."))

    def rate(side, word):  # over the datasets with such questions, else None (MMAD's script has 100% for none)
        rates = [100.0 * texts.count(word) / len(texts) for (of_side, _), texts in said.items() if of_side == side]
        return fmean(rates) if rates else None
    out = {"questions": len(scored), "unanswered": sum(r["predicted"] is None for r in scored),
           "overkill": rate("normal", "yes"), "miss": rate("defect", "no")}
    ious = [r["iou"] for r in records if r["question_type"] == "Defect Grounding" and "iou" in r]
    return {**out, "grounding_iou": fmean(ious)} if ious else out


# ----------------------------------------------------------------------------- tables

def _markdown(first, columns, rows) -> str:
    """rows: (name, {column: value or None}, signed). Two decimals, '-' where missing."""
    lines = ["| " + " | ".join([first] + columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, values, signed in rows:
        cells = ["-" if values.get(c) is None else (f"{values[c]:+.2f}" if signed else f"{values[c]:.2f}")
                 for c in columns]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def _with_deltas(named_rows, columns, deltas):
    rows = [(name, values, False) for name, values in named_rows]
    if deltas and named_rows:
        (base_name, base), later = named_rows[0], named_rows[1:]
        for name, values in later:
            diff = {c: values[c] - base[c] for c in columns
                    if values.get(c) is not None and base.get(c) is not None}
            rows.append((f"Δ ({name} − {base_name})", diff, True))
    return rows


def table_subtasks(named_results, deltas=False) -> str:
    """Paper Table 2: rows = names, columns = the 7 subtasks + Average (each result's "Average" row)."""
    columns = QUESTION_TYPES + ["Average"]
    named_rows = [(name, res.get("Average", {})) for name, res in named_results]
    return _markdown("Model", columns, _with_deltas(named_rows, columns, deltas))


def table_datasets(named_results, subtask="Average", deltas=False) -> str:
    """Paper Table 3 (subtask="Average") or Table 5 (subtask="Anomaly Detection"):
    rows = names, columns = datasets (in first-seen order) + Average."""
    columns = []
    for _, res in named_results:
        columns += [d for d in datasets(res) if d not in columns]
    named_rows = [(name, {**{d: res[d].get(subtask) for d in datasets(res)},
                          "Average": res.get("Average", {}).get(subtask)}) for name, res in named_results]
    return _markdown("Setting", columns + ["Average"], _with_deltas(named_rows, columns + ["Average"], deltas))


def read_results(path) -> dict:
    """A results.json written by eval.py; anything else is one line naming the file."""
    hint = "pass a results.json written by eval.py"
    try:
        with open(path, encoding="utf-8") as f:
            res = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; {hint}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder; pass the results.json inside it") from None
    except (ValueError, RecursionError) as e:  # bad JSON, binary (UnicodeDecodeError), nested too deeply
        raise ValueError(f"{path}: not valid JSON ({type(e).__name__}: {e}); {hint}") from None
    if not isinstance(res, dict) or "Average" not in res:
        raise ValueError(f"{path}: no \"Average\" row; {hint}")
    for row in datasets(res) + ["Average"]:  # each {subtask: accuracy %}, what the tables read
        values = res[row].values() if isinstance(res[row], dict) else [None]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100 for v in values):
            raise ValueError(f"{path}: row {row!r} is not {{subtask: accuracy % from 0 to 100}}; {hint}")
    return res


def compare_settings(named) -> str:
    """Each result's setting and question count, and a warning naming what differs besides the model."""
    keys = ("data", "split", "heldout_draw", "shots", "templates", "seed", "shuffle", "unanswered_rule", "questions")
    metas = [res.get("_meta", {}) for _, res in named]
    lines = [f"{name}: {meta.get('questions', '?')} questions, {meta.get('shots', '?')}-shot, "
             f"split {meta.get('split', '?')}, model {meta.get('model', '?')}" for (name, _), meta in zip(named, metas)]
    differ = [k for k in keys if len({json.dumps(m.get(k)) for m in metas}) > 1]
    if differ:
        lines.append(f"WARNING: these results differ in {', '.join(differ)}: the deltas below compare different "
                     "settings, not only different models")
    return "\n".join(lines)


def compare(paths) -> str:
    """Tables 2, 3 and 5 for several results.json, rows named by their folders, Δ rows vs the first."""
    named = [(os.path.basename(os.path.dirname(os.path.abspath(path))), read_results(path)) for path in paths]
    return "\n\n".join([compare_settings(named),
        "Subtasks (paper Table 2)\n\n" + table_subtasks(named, deltas=True),
        "Datasets, average of subtasks (paper Table 3)\n\n" + table_datasets(named, deltas=True),
        "Datasets, Anomaly Detection (paper Table 5)\n\n" + table_datasets(named, "Anomaly Detection", deltas=True)])


# ----------------------------------------------------------------------------- answering

def shuffle_options(options: dict, answer: str, seed: int, key: str):
    """Permute the option texts over the same letters; return (options, remapped gold letter).
    Seeded by seed + a stable hash of the question (not hash(): it changes per process)."""
    if not options:
        return options, answer
    digest = hashlib.sha256(f"{seed}\n{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    letters, texts = list(options), list(options.values())
    order = list(range(len(texts)))
    rng.shuffle(order)  # new position i shows old option order[i]
    return ({letters[i]: texts[j] for i, j in enumerate(order)},
            letters[order.index(letters.index(answer))] if answer in options else answer)


LETTER = re.compile(r"\b([A-E])\b")


def parse_prediction(text: str, options: dict):
    """(letter or None, method): the <answer> block's choice (roam.extract_choice); else MMAD's rule,
    the last standalone capital A-E in the whole text that is an option (it also matches an article
    "A", as MMAD's does); else the option whose text is closest to the answer (or whole text) by
    difflib ratio on lower-cased text, if that ratio is at least 0.5 (below it the match is noise)."""
    import roam
    answer = roam.parse(text).answer
    if answer:
        choice = roam.extract_choice(answer, options)
        if choice in options:
            return choice, "answer"
    letters = [x for x in LETTER.findall(text) if x in options]
    if letters:
        return letters[-1], "letter"
    said = (answer or text).strip().lower()
    ratios = {k: difflib.SequenceMatcher(None, said, v.strip().lower()).ratio() for k, v in options.items()}
    if ratios and max(ratios.values()) >= 0.5:
        return max(ratios, key=ratios.get), "text"
    return None, None


def record_key(image, question, question_type):
    return (image, question, question_type)


def answer_record(line):
    """The record on one answers.jsonl line, or None for a torn or foreign line (a run killed mid-write)."""
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        return None
    return r if isinstance(r, dict) and {"image", "question", "question_type"} <= r.keys() else None


def read_answers(path):
    """Records of an answers.jsonl, and how many lines were unreadable."""
    if not os.path.exists(path):
        return [], 0
    with open(path) as f:
        records = list(map(answer_record, f))
    return [r for r in records if r is not None], records.count(None)


def asked(sample, seed=0):
    """The sample as it is asked: options reshuffled with the seed (§4.2), the gold letter remapped."""
    options, gold = shuffle_options(sample.options, sample.answer, seed, f"{sample.image}\n{sample.question}")
    return dataclasses.replace(sample, options=options, answer=gold)


def record(sample, text):
    """One answers.jsonl record: the fields summarize and consistency read; a box question gets its IoU instead of
    a letter."""
    r = {"image": sample.image, "question": sample.question, "question_type": sample.question_type,
         "options": sample.options, "correct_answer": sample.answer, "predicted": None, "output": text,
         "parse_method": None}
    if sample.question_type == "Defect Grounding":  # scored by IoU, not by a letter
        import roam
        r["iou"] = roam.iou_reward(text, sample.answer, {})
    else:
        r["predicted"], r["parse_method"] = parse_prediction(text, sample.options)
    return r


def answer_all(samples, out_dir, load_generator, batch_size=8, seed=0, shuffle=True, progress=True):
    """Answer each sample not yet in out_dir/answers.jsonl; return (its records, number generated now).

    load_generator() -> generate_texts(list of samples) -> one output text per sample: the model side,
    loaded only when something is left to answer (a finished run re-scores without loading a model)."""
    from tqdm import tqdm
    path = os.path.join(out_dir, "answers.jsonl")
    done, bad = read_answers(path)
    if bad:  # rewrite without the broken line, else the next append would glue onto it
        print(f"warning: {path}: ignored {bad} unreadable line(s) (a killed run); answering them again",
              file=sys.stderr)
        write_atomic(path, "".join(json.dumps(r) + "\n" for r in done))
    by_key = {record_key(r["image"], r["question"], r["question_type"]): r for r in done}
    first = {}  # each question once, in the json's order
    for s in samples:
        first.setdefault(record_key(s.image, s.question, s.question_type), s)
    todo = [s for k, s in first.items() if k not in by_key]
    generate_texts = load_generator() if todo else None
    with open(path, "a") as f, tqdm(total=len(todo), desc="eval", unit="q", disable=not progress) as bar:
        for i in range(0, len(todo), batch_size):
            batch = [asked(s, seed) if shuffle else s for s in todo[i:i + batch_size]]
            texts = generate_texts(batch)
            for s, text in zip(batch, texts):
                r = record(s, text)
                by_key[record_key(s.image, s.question, s.question_type)] = r
                f.write(json.dumps(r) + "\n")
            f.flush()  # a killed run loses at most the batch in flight
            bar.update(len(batch))
    return [by_key[k] for k in first], len(todo)


# ----------------------------------------------------------------------------- CLI

@dataclasses.dataclass
class Config:
    model: str = cli.option("tiny", '"tiny" = the embedded offline model, else a local Hugging Face folder')
    data: str | None = cli.option(None, "MMAD-schema json (mmad.json); default: its run's, else the synthetic set")
    root: str | None = cli.option(None, "folder the json's image paths are relative to; default: the json's folder")
    split: str = cli.option("heldout", "heldout: only images the checkpoint's few-shot draw left out (its grpo.py "
                            "--seed, --n-images); all: the whole json (paper's tables)", choices=["heldout", "all"])
    shots: int | None = cli.option(None, "normal template images before the query; default: the checkpoint's "
                                   "(grpo.py's run settings), else 1 (Table 2 is 1-shot)", choices=[0, 1, 2])
    templates: str = cli.option("similar", "MMAD's retrieved similar templates, or random ones (paper §4.4)",
                                choices=["similar", "random"])
    limit: int | None = cli.option(None, "answer N questions drawn with --seed across every dataset, category and "
                                   "subtask in turn (not the json's first N)")
    out: str | None = cli.option(None, "output folder; default runs/eval/<model name>_<shots>shot")
    batch_size: int = cli.option(8, "questions per generate call")
    max_new_tokens: int = cli.option(256, "completion length limit (the authors' setting)")
    seed: int = cli.option(0, "seed of the option reshuffle")
    shuffle: bool = cli.option(True, "reshuffle the options (paper §4.2); --no-shuffle keeps the json's order")
    unanswered: str = cli.option("wrong", "unanswered questions count as wrong, or drop them from the denominator "
                                 "(MMAD's published tables); results.md gives both averages when any are unanswered",
                                 choices=list(UNANSWERED))
    grounding: bool = cli.option(False, 'also ask "Defect Grounding" questions, scored by mean IoU')
    device: str | None = cli.option(None, "default: cuda if available, else cpu")


def parse_args(argv=None):
    p = cli.parser(__doc__.split("\n")[0], prog="eval.py")
    p.add_argument("--compare", nargs="+", metavar="RESULTS_JSON", type=cli.non_empty,
                   help="print Tables 2, 3, 5 for these results.json files, with deltas vs the first")
    cli.add_flags(p, Config)
    args = cli.given(p, argv)
    compare_paths, cfg, default = args.pop("compare"), Config(**args), vars(Config())
    typed = [("--no-" if v is False else "--") + k.replace("_", "-") for k, v in vars(cfg).items() if v != default[k]]
    if compare_paths and typed:  # --compare answers nothing: they would be ignored without a word
        p.error(f"--compare reads its settings from the results.json files; drop {' '.join(typed)}")
    return cfg, compare_paths


def load_questions(cfg: Config, draw=None):
    import data
    import synth
    json_path, root = synth.questions_file(cfg)
    if cfg.data is None:
        print(f"no --data: using the synthetic set {json_path}", file=sys.stderr)
    samples = data.load_mmad(json_path, root)
    data.check_shots(samples, cfg.shots or 0, cfg.templates, json_path)
    if cfg.split == "heldout":  # draw: the run's few-shot draw (run_settings), so no image it trained on is scored
        samples = data.few_shot(samples, **(draw or {}))[1]
        if not samples:
            raise ValueError(f"{json_path}: no held-out image (the few-shot draw takes them all); pass --split all")
    samples = [s for s in samples if cfg.grounding or s.question_type != "Defect Grounding"]
    return data.spread_sample(samples, cfg.limit, cfg.seed) if cfg.limit else samples, json_path


def run_settings(model):
    """(shots, draw, why, config) to score `model` with by default, as it was trained; draw: data.few_shot's seed,
    n_images; config: its grpo.py settings ({} if none). From a grpo.py checkpoint's trainer_state.json (old final/s
    had none: the newest step-*/'s), else grpo.py's defaults."""
    import grpo
    run = os.path.dirname(os.path.normpath(model))  # normpath: "runs/x/final/" is in runs/x too
    steps = sorted(d for d in os.listdir(run) if d.startswith("step-"))[::-1] if os.path.isdir(run) else []
    for state in [] if model == "tiny" else [model] + [os.path.join(run, d) for d in steps]:
        path = os.path.join(state, "trainer_state.json")
        try:
            with open(path) as f:
                config = json.load(f)["config"]
            return int(config["shots"]), {k: int(config[k]) for k in ("seed", "n_images")}, "as trained", config
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:  # torn, or not grpo.py's: no guessing
            raise ValueError(f"{path}: not a grpo.py run state ({type(e).__name__}: {e}); copy it from the run's "
                             "newest step-*/ folder, or delete it") from None
    draw = {"seed": grpo.Config.seed, "n_images": grpo.Config.n_images}  # a base model: a default run's questions
    return ((grpo.TINY["shots"], draw, "grpo.py's defaults for the tiny model", {}) if model == "tiny"
            else (1, draw, "not a grpo.py run: MMAD Table 2's 1-shot, grpo.py's default draw", {}))


def _notes(records, errors, agree, unanswered) -> str:
    """results.md below the tables: detection errors, unanswered questions (both averages when there are
    any, so a number can be set beside MMAD's tables), reasoning/answer consistency."""
    fmt = lambda v: "-" if v is None else f"{v:.2f}%"  # noqa: E731
    n, total = errors["unanswered"], errors["questions"]
    rule = ("count as wrong (--unanswered wrong)" if unanswered == "wrong"
            else "are dropped from the denominator (--unanswered drop, MMAD's published tables)")
    lines = [f"Anomaly Detection, mean of the datasets: overkill {fmt(errors['overkill'])} (normal images called "
             f"defective), miss {fmt(errors['miss'])} (defective images called normal).",
             f"Unanswered questions: {n} of {total}; in the tables they {rule}."]
    if "grounding_iou" in errors:
        lines.insert(1, f"Defect Grounding: mean IoU {errors['grounding_iou']:.3f}.")
    if n:
        both = {u: summarize(records, u)["Average"].get("Average") for u in UNANSWERED}
        lines.append(f"Average with unanswered as wrong: {fmt(both['wrong'])}; dropped (MMAD's convention): "
                     f"{fmt(both['drop'])}.")
    lines += ["", f"Reasoning/answer consistency: % of well-formed replies ({agree['well_formed']} of "
              f"{agree['replies']}) whose reasoning concludes the option they answer (what ROAM trains).", "",
              _markdown("Consistency", [k for k in QUESTION_TYPES if k in agree] + ["Overall"],
                        [("%", agree, False)])]
    return "\n".join(lines) + "\n"


POSITIVE = {"limit": "questions", "batch_size": "questions per generate call", "max_new_tokens": "tokens per answer"}


def check_config(cfg: Config):
    """The flags, before anything is read, written or loaded: a mistake is one line naming the flag."""
    for name, what in POSITIVE.items():
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: pass a positive number of {what}")
    if cfg.out and os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
        raise ValueError(f"--out {cfg.out}: is a file; pass a folder for the answers and tables")
    if cfg.model != "tiny":  # headers only: a wrong folder is named before --out is made
        import anomalyr1
        anomalyr1.check_model_folder(cfg.model)
    if cfg.device is not None:
        import torch
        try:
            device = torch.device(cfg.device)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"--device {cfg.device}: not a device eval.py runs on; pass cpu, cuda or cuda:N")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"--device {cfg.device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                             "pass --device cpu or leave --device out")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"--device {cfg.device}: MPS is not available here; pass --device cpu")


def check_setting(out, setting):
    """Answers from another setting must not be mixed into this one's table (--unanswered only re-scores them).
    A folder without answers (a run that failed before its first, e.g. on a bad --model) is taken as fresh."""
    path = os.path.join(out, "setting.json")
    if read_answers(os.path.join(out, "answers.jsonl"))[0] and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError, RecursionError):
            old = None
        if not isinstance(old, dict):
            raise ValueError(f"{path}: unreadable, so the answers beside it cannot be matched to a setting; "
                             "pass a new --out")
        if old != setting:
            changed = ", ".join(k for k in setting if old.get(k) != setting[k])
            raise ValueError(f"{out} holds answers for another setting ({changed} differ); pass a new --out")
    else:
        write_atomic(path, json.dumps(setting, indent=1))


def model_name(model):
    """'tiny', the folder's name, or RUN-final (RUN-step-NNNNNN) for a grpo.py checkpoint: every run's is final."""
    run, base = os.path.split(os.path.abspath(model))
    named = base == "final" or base.startswith("step-")
    return "tiny" if model == "tiny" else f"{os.path.basename(run)}-{base}" if named else base


def evaluate(cfg: Config) -> dict:
    """Answer, score and write OUT/answers.jsonl, results.json, results.md; return results."""
    check_config(cfg)
    shots, draw, why, trained = run_settings(cfg.model)  # score a model as it was trained, on images it did not
    if cfg.shots is None:                                   # train on, of the json it trained on
        cfg = dataclasses.replace(cfg, shots=shots)
        print(f"--shots {shots} ({why})", file=sys.stderr)
    if cfg.data is None and trained.get("data"):  # else a run trained on mmad.json was scored on the synthetic set
        cfg = dataclasses.replace(cfg, data=trained["data"], root=cfg.root or trained.get("root"))
        print(f"--data {cfg.data}{f' --root {cfg.root}' if cfg.root else ''} ({why})", file=sys.stderr)
    draw = draw if cfg.split == "heldout" else None  # --split all: no draw, every image
    if draw:
        print(f"--split heldout: the images grpo.py --seed {draw['seed']} --n-images {draw['n_images']} left out "
              f"({why})", file=sys.stderr)
    name = model_name(cfg.model)
    out = cfg.out or os.path.join("runs", "eval", f"{name}_{cfg.shots}shot")
    samples, json_path = load_questions(cfg, draw)
    if cfg.grounding:  # the model answers a box in the frame it sees: its gold moves there, as in training
        import grpo
        samples = grpo.golds_in_model_frame(samples, cfg.model)
    cli.make_folder(out, f"--out {out}")
    setting = {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("root", "limit", "out", "batch_size",
               "device", "unanswered")}, "data": os.path.abspath(json_path),
               "model": cfg.model if cfg.model == "tiny" else os.path.abspath(cfg.model)}
    check_setting(out, setting)

    def load_generator():
        import torch
        import anomalyr1
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, processor = anomalyr1.load(cfg.model, device=device)

        def generate_texts(batch):
            inputs = anomalyr1.prepare(processor, batch, shots=cfg.shots, templates=cfg.templates)
            with torch.no_grad():  # greedy: the benchmark number must not depend on sampling luck
                _, texts = anomalyr1.generate(model, processor, inputs, max_new_tokens=cfg.max_new_tokens,
                                              do_sample=False, num_return_sequences=1)
            return texts
        return generate_texts

    records, generated = answer_all(samples, out, load_generator, cfg.batch_size, cfg.seed, cfg.shuffle)
    summary, errors, agree = summarize(records, cfg.unanswered), detection_errors(records), consistency(records)
    meta = {"model": cfg.model, "data": setting["data"], "split": cfg.split, "heldout_draw": draw, "shots": cfg.shots,
            "templates": cfg.templates, "seed": cfg.seed, "shuffle": cfg.shuffle, "unanswered_rule": cfg.unanswered,
            **errors, "generated": generated, "date": datetime.datetime.now().isoformat(timespec="seconds")}
    results = {**summary, "_meta": meta, "_consistency": agree}
    write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=1))
    md = (f"# MMAD: {cfg.model}, {cfg.shots}-shot, {cfg.templates} templates, {os.path.basename(json_path)} "
          f"({cfg.split})\n\n{table_subtasks([(name, summary)])}\n\n{table_datasets([(name, summary)])}\n\n"
          + _notes(records, errors, agree, cfg.unanswered))
    write_atomic(os.path.join(out, "results.md"), md)
    print(md)
    print(f"answered {generated} new question(s); wrote {out}/results.json, results.md", file=sys.stderr)
    return results


def main(argv=None) -> int:
    cfg, compare_paths = parse_args(argv)
    with cli.user_errors("eval.py"):  # bad paths, files, settings: one line, exit 2
        if compare_paths:
            print(compare(compare_paths))
        else:
            evaluate(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
