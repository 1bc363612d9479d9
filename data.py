"""Datasets for AnomalyR1: everything trains and evaluates on the MMAD json schema.

Schema (real MMAD `mmad.json` and the files `build` writes alike): a dict keyed by image path
relative to a data root (first component = dataset, second = category) ->

    {"conversation": [{"Question": "Is there any defect in the object?",
                       "Options": {"A": "Yes.", "B": "No."}, "Answer": "A",
                       "type": "Anomaly Detection"}, ...],
     "similar_templates": ["synth/pill/train/good/003.png", ...],   # normal images, best first
     "random_templates": [...],
     "mask_path": "synth/pill/ground_truth/crack/000_mask.png"}     # or null for normal images

Besides MMAD's 7 subtasks (QUESTION_TYPES; its "Object Structure"/"Object Details" are folded into
"Object Analysis") a record may hold "Defect Grounding" turns: "Options": {} and "Answer":
'{"bbox_2d": [x1, y1, x2, y2]}', integer ORIGINAL-image pixels, x2/y2 exclusive (the mask's
bounding box: x1 = first defect column, x2 = last defect column + 1), scored by IoU.

`python data.py build` turns any MVTec-layout folder into such questions (mvtec.py).
The synthetic defect set (`synth`, `ensure_synthetic`) lives in synth.py; `python data.py synth` draws it.

CLI:  python data.py synth OUT [--seed S]
      python data.py build ROOT --out questions.json [--name DATASET] [--seed S]
      python data.py stats FILE --root ROOT
"""
import json
import math
import os
import random
import shutil
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm import tqdm

import cli

QUESTION_TYPES = ["Anomaly Detection", "Defect Classification", "Defect Localization", "Defect Description",
                  "Defect Analysis", "Object Classification", "Object Analysis"]  # the 7 MMAD subtasks, table order
GROUNDING = "Defect Grounding"
FOLD = {"Object Structure": "Object Analysis", "Object Details": "Object Analysis"}  # as MMAD's own evaluation


@dataclass
class Sample:
    image: str                 # path relative to root; first component is the dataset
    root: str                  # absolute data root; image/templates resolve inside it
    question: str
    options: dict[str, str]    # {"A": "Yes.", "B": "No."}; {} for Defect Grounding
    answer: str                # gold letter, or '{"bbox_2d": [x1, y1, x2, y2]}' for Defect Grounding
    question_type: str
    similar_templates: list[str] = field(default_factory=list)
    random_templates: list[str] = field(default_factory=list)
    mask_path: str | None = None
    label: str = "good"        # "good" or the defect kind (for LR-IAD class weights)
    dataset: str = ""
    category: str = ""

    def path(self) -> str:
        return os.path.join(self.root, self.image)

    def template_paths(self, shots: int, templates: str = "similar") -> list[str]:
        """The first `shots` normal images of the `templates` list ("similar" or "random", as --templates)."""
        if templates not in ("similar", "random"):
            raise ValueError(f"--templates must be 'similar' or 'random', got {templates!r}")
        names = self.similar_templates if templates == "similar" else self.random_templates
        return [os.path.join(self.root, t) for t in names[:shots]]


def check_shots(samples, shots, templates, path):
    """--shots asks no more template images than every question has: else its prompt would quietly hold fewer."""
    fewest = min((len(s.template_paths(shots, templates)) for s in samples), default=shots)
    if fewest < shots:
        raise ValueError(f"--shots {shots}: some questions of {path} have only {fewest} {templates} template "
                         f"image(s); pass --shots {fewest} or fewer")


# ----------------------------------------------------------------------------------------------
# 1. Images: the one decoder.
# ----------------------------------------------------------------------------------------------
def _mask_files(path) -> list[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(".png"))
    return [path]


# Images: the one decoder. anomalyr1.load_image (prompts), build's masks and template ranking and load_mmad's
# check all open files here, so every entry point sees the same picture:
#   16-bit gray (PIL mode I;16) -> 8 bits by v / 257 rounded (PIL's own convert("RGB") clips it: all white);
#   16-bit RGB (PNG 48-bit): PIL already keeps the high byte (within 1 of v / 257);
#   RGBA, LA, palette with transparency -> composited on white, as Qwen2.5-VL's own image loader does
#   (dropping alpha would show whatever colour hides under transparent pixels, often black);
#   gray, palette, bilevel, CMYK (JPEG) -> PIL's RGB conversion; multi-frame files -> the first frame;
#   32-bit float (F) has no agreed range -> refused; more than 2 x PIL's MAX_IMAGE_PIXELS (179 MP) -> refused
#   (PIL's decompression-bomb guard); between 89 and 179 MP the image is decoded (callers downscale, §4.1).
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _decode(path) -> Image.Image:
    """The image at `path` decoded in its own mode; FileNotFoundError/ValueError naming the file and the fix."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not an image file; point at a PNG/JPEG file")
    if not os.path.isfile(path):
        # no --root hint: the scripts with --root (load_mmad) check every path first and name --root themselves;
        # the paths that get here are typed directly, e.g. anomalyr1.py's --image, which has no --root
        raise FileNotFoundError(f"{path}: image not found; check the path")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
    except Image.DecompressionBombError as e:
        raise ValueError(f"{path}: too large to decode ({e}); downscale it first, e.g. to 1000x800 (§4.1)") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for corrupt files
        raise ValueError(f"{path}: cannot be decoded ({type(e).__name__}: {e}); re-download or re-export it as "
                         "PNG/JPEG") from None
    if strip := _strip(im.size):
        raise ValueError(f"{path}: {strip}, which Qwen2.5-VL's image processor refuses; crop or pad it")
    return im


def _strip(size) -> str | None:
    """Why Qwen2.5-VL's image processor would refuse an image of this (width, height), or None: its resize
    (smart_resize) raises when the long side is over 200 times the short one."""
    w, h = size
    return f"has an aspect ratio over 200:1 ({w}x{h} pixels)" if max(w, h) > 200 * min(w, h) else None


def _to_rgb(im, path) -> Image.Image:
    if im.mode in SIXTEEN_BIT:
        a = np.asarray(im).astype(np.int64)                                            # [H, W]
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(f"{path}: 32-bit integer pixels outside 0..65535; save it as an 8- or 16-bit PNG")
        return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    if im.mode == "F":
        raise ValueError(f"{path}: 32-bit float pixels have no agreed range; save it as an 8- or 16-bit PNG")
    if im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError as e:                                                           # e.g. LAB, HSV
        raise ValueError(f"{path}: {im.mode} images cannot be converted to RGB ({e}); save it as RGB PNG/JPEG") \
            from None


def cache_dir():
    """Where the tiny model and the synthetic set are built once: $ANOMALYR1_CACHE, else ~/.cache/anomalyr1."""
    return os.environ.get("ANOMALYR1_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "anomalyr1")


def publish_dir(tmp, final):
    """Rename a finished folder built beside `final` into place: it appears whole or not at all. If another process
    published `final` first (the same deterministic build), its copy stays and `tmp` goes."""
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        os.replace(tmp, final)
    except OSError:
        if not os.path.isdir(final):
            raise  # a real failure, not another process winning the race
        shutil.rmtree(tmp, ignore_errors=True)


def write_atomic(path, text):
    """Write the whole file or nothing: a run killed while writing leaves the previous file (or none), never a torn
    one, and any failure (or Ctrl-C) leaves no .tmp behind."""
    tmp = f"{path}.{os.getpid()}.tmp"  # the pid: two writers of one path never share a .tmp
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def image_size(path) -> tuple[int, int]:
    """(width, height) of the image at `path`, read from its header."""
    with Image.open(path) as im:
        return im.size


def open_image(path) -> Image.Image:
    """The picture at `path` as 8-bit RGB at full size (see above for unusual modes)."""
    return _to_rgb(_decode(path), path)


def _read_mask(path) -> np.ndarray:
    """Union of the mask file(s) at path as bool [H, W]; any non-zero pixel (any bit depth) is defect."""
    masks = []
    for f in _mask_files(path):
        im = _decode(f)
        if im.mode in SIXTEEN_BIT or im.mode in ("1", "L", "F"):
            masks.append(np.asarray(im) > 0)                                             # [H, W]
        else:
            masks.append(np.asarray(im.convert("RGB")).any(-1))                          # colour: any channel set
    if not masks:
        raise ValueError(f"{path}: mask folder holds no PNG masks; add them or remove the folder")
    if len({m.shape for m in masks}) > 1:
        raise ValueError(f"{path}: its masks differ in size ({sorted({m.shape for m in masks})}); they must all "
                         "match the image")
    return np.any(masks, axis=0)



# ----------------------------------------------------------------------------------------------
# 2. Loading and validating MMAD-schema json.
# ----------------------------------------------------------------------------------------------
def _label_of(key) -> str:
    parts = key.split("/")[:-1]
    if parts and parts[-1] == "rgb":                       # MVTec 3D-AD: test/<defect>/rgb/<id>.png
        parts = parts[:-1]
    return parts[-1] if parts else "good"


def _check_image(rel, root_real, folder_ok=False) -> str | None:
    """Why `rel` is unusable (escapes root / missing / a folder / corrupt / too large), or None when it is fine.

    folder_ok: `rel` may be a folder of PNG masks (MVTec-LOCO's mask_path); each file in it is checked too,
    including that it stays inside the root (a symlink in the folder pointing out of it is refused)."""
    if not rel or "\0" in rel:
        return "is an empty path or holds a NUL character"
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        return "escapes the root ('..' and absolute paths are not allowed)"
    path = os.path.realpath(os.path.join(root_real, rel))
    inside = root_real.rstrip(os.sep) + os.sep
    if not path.startswith(inside):
        return f"escapes the root (resolves to {path})"    # e.g. a symlink pointing elsewhere
    if not os.path.exists(path):
        return "missing"
    if os.path.isdir(path) and not folder_ok:
        return "is a folder, not an image file"
    files = _mask_files(path)
    if not files:
        return "is a mask folder holding no PNG masks"
    for f in files:
        real = os.path.realpath(f)
        if not real.startswith(inside):
            return f"escapes the root ({os.path.basename(f)} in it resolves to {real})"
        if not os.path.isfile(real):
            return f"is a folder, not an image file ({os.path.basename(f)} in it)" if os.path.isdir(real) else \
                f"missing ({os.path.basename(f)} in it is a broken link)"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(real) as im:
                    size = im.size
                    if im.format == "JPEG":                # verify() passes truncated JPEGs: decode at 1/8 size
                        im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
                        im.load()
                    else:
                        im.verify()                        # PNG: checks every chunk's CRC up to IEND
        except Image.DecompressionBombError as e:
            return f"too large to decode ({e})"
        except Exception as e:
            return f"cannot be decoded ({type(e).__name__}: {e})"
        if strip := _strip(size):
            return strip
    return None


FIXES = {"missing": "download/extract the dataset so these paths exist, or pass --root to the folder holding them",
         "escapes": "paths must be relative and stay inside the data root (no '..', absolute paths or "
                             "symlinks out of it)",
         "is": "image keys and templates must name image files (only mask_path may be a folder of PNG masks)",
         "cannot": "re-download or re-extract the corrupt files",
         "too": "downscale them first, e.g. to 1000x800 (paper §4.1)",
         "has": "crop or pad them nearer to square, or remove their questions"}
REGENERATE = "fix them or regenerate the file with `python data.py build`"


def _short(value, n=60) -> str:
    """repr of a value from the json, cut to n characters: an error line stays one readable line."""
    r = repr(value)
    return r if len(r) <= n else r[:n - 3] + "..."


def _turn_problem(turn) -> str | None:
    """Why one conversation turn is unusable, or None; checks every type before anything reads it."""
    if not isinstance(turn, dict):
        return f"is a {type(turn).__name__}, not an object"
    miss = [f for f in ("Question", "Options", "Answer", "type") if f not in turn]
    if miss:
        return f"lacks {', '.join(miss)}"
    q, opts, ans, qtype = turn["Question"], turn["Options"], turn["Answer"], turn["type"]
    if not isinstance(q, str) or not q.strip():
        return f"Question {_short(q)} is not a non-empty string"
    if not isinstance(qtype, str):
        return f"type {_short(qtype)} is not a string"
    qtype = FOLD.get(qtype, qtype)
    if qtype not in QUESTION_TYPES and qtype != GROUNDING:
        return f"has unknown type {_short(turn['type'])} (expected one of MMAD's)"
    if not isinstance(opts, dict):
        return "Options is not an object of letter -> text"
    bad = [k for k, v in opts.items() if len(k) != 1 or not "A" <= k <= "Z" or not isinstance(v, str) or not v.strip()]
    if bad:
        return f"option {_short(bad[0])}: {_short(opts[bad[0]])} (options map a capital letter to non-empty text)"
    if not isinstance(ans, str):
        return f"Answer {_short(ans)} is not a string"
    if qtype == GROUNDING:
        return None if _is_box(ans) else "grounding answer is not '{\"bbox_2d\": [x1, y1, x2, y2]}' with x1 < x2, y1 < y2"
    if ans not in opts:
        return f"answer {_short(ans)} is not one of its options {sorted(opts)}"
    return None


def _read_questions_json(json_path, root) -> dict:
    """The json's records as a non-empty dict, or one error naming the file (or the root) and the fix."""
    if os.path.isdir(json_path):
        raise ValueError(f"{json_path}: is a folder; pass the questions json inside it (e.g. mmad.json)")
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"{json_path}: no such file; run `python data.py build` or download MMAD's mmad.json")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{json_path}: data root {root} is not a folder; pass --root to the folder holding "
                                "the images")
    try:
        with open(json_path, encoding="utf-8") as f:
            records = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                         "fix the file or regenerate it with `python data.py build`") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{json_path}: not UTF-8 text (byte {e.start}); is this really the questions json?") from None
    except RecursionError:
        raise ValueError(f"{json_path}: nested too deeply to be MMAD questions; is this really the questions json? "
                         "Regenerate it with `python data.py build`") from None
    if not isinstance(records, dict):
        raise ValueError(f"{json_path}: expected a JSON object keyed by image path (MMAD schema), "
                         f"got {type(records).__name__}")
    if not records:
        raise ValueError(f"{json_path}: holds no questions (an empty object); build some with `python data.py build`")
    return records


def _mask_under(root, parts, mask_path):
    """mask_path as a path under the root: MMAD's mmad.json gives it relative to the image's dataset and category
    folder ("rbg_mask/broken_large/000_rbg_mask.png" beside "DS-MVTec/bottle/image/..."), data.py build relative to
    the root. The first that exists; else the path as given, which the image check then reports."""
    for depth in (0, 2, 3):
        candidate = "/".join(parts[:depth] + [mask_path])
        if os.path.exists(os.path.join(root, candidate)):
            return candidate
    return mask_path


def load_mmad(json_path, root) -> list[Sample]:
    """One Sample per conversation turn; raises ONE ValueError listing every problem before any training.

    Every field is type-checked here (so nothing fails mid-run), then every image, template and mask file is
    checked to exist inside `root` and to decode."""
    fname = os.path.basename(json_path)
    records = _read_questions_json(json_path, root)
    root = os.path.abspath(root)
    errors, samples, images, masks = [], [], set(), set()
    for key, rec in records.items():
        if not isinstance(rec, dict):
            errors.append(f"record {_short(key)} is a {type(rec).__name__}, not an object")
            continue
        conv = rec.get("conversation")
        if not isinstance(conv, list) or not conv:
            errors.append(f"record {_short(key)} has no 'conversation' list")
            continue
        tpl = [rec.get(f) or [] for f in ("similar_templates", "random_templates")]   # null: no templates
        if not all(isinstance(t, list) and all(isinstance(p, str) for p in t) for t in tpl):
            errors.append(f"record {_short(key)} has templates that are not lists of paths")
            continue
        mask_path = rec.get("mask_path")
        if mask_path is not None and not isinstance(mask_path, str):
            errors.append(f"record {_short(key)} mask_path {_short(mask_path)} is not a path or null")
            continue
        images.update([key, *tpl[0], *tpl[1]])
        parts = key.split("/")
        if mask_path:
            mask_path = _mask_under(root, parts, mask_path)
            masks.add(mask_path)
        for i, turn in enumerate(conv):
            if why := _turn_problem(turn):
                errors.append(f"record {_short(key)} turn {i} {why}")
                continue
            samples.append(Sample(image=key, root=root, question=turn["Question"], options=dict(turn["Options"]),
                                  answer=turn["Answer"], question_type=FOLD.get(turn["type"], turn["type"]),
                                  similar_templates=list(tpl[0]), random_templates=list(tpl[1]),
                                  mask_path=mask_path, label=_label_of(key), dataset=parts[0],
                                  category=parts[1] if len(parts) > 2 else ""))
    if errors:
        raise ValueError(f"{json_path}: {len(errors)} malformed records (first: {'; '.join(errors[:3])}); "
                         + REGENERATE)
    root_real = os.path.realpath(root)
    check = tqdm(sorted(images | masks), desc=f"checking {fname}", disable=len(images) < 500, file=sys.stderr)
    bad = [(p, why) for p in check if (why := _check_image(p, root_real, folder_ok=p in masks and p not in images))]
    if bad:
        shown = "; ".join(f"{p if p.isprintable() and p else repr(p)} {why}" for p, why in bad[:3])
        fixes = "; ".join(v for k, v in FIXES.items() if any(why.split()[0] == k for _, why in bad))
        listing = f"the first 3: {shown}" if len(bad) > 3 else shown
        raise ValueError(f"{json_path}: {len(bad)} image problem{'s' * (len(bad) > 1)} under {root} ({listing}). "
                         f"Fix: {fixes}")
    return samples


def _is_box(answer) -> bool:
    """'{"bbox_2d": [x1, y1, x2, y2]}' with finite numbers, x1 < x2 and y1 < y2."""
    try:
        box = json.loads(answer)["bbox_2d"]
        return (len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                      for v in box) and box[0] < box[2] and box[1] < box[3])
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        return False


# ----------------------------------------------------------------------------------------------
# 3. Few-shot split (paper §3.5: 600 training images) and 4. stats.
# ----------------------------------------------------------------------------------------------
def few_shot(samples, n_images=600, seed=0) -> tuple[list[Sample], list[Sample]]:
    """(train, held_out) split by whole image, round-robin over (dataset, category, label) strata.

    Each round takes one more image from every stratum (shuffled order), so every defect kind of every
    category gets the same count, until n_images are taken. A stratum never gives all its images when
    it has >= 2 (the held-out split keeps one), and if fewer than n_images images exist at all, the
    training split takes half (rounded up) of each stratum instead.
    """
    rng = np.random.default_rng(seed)
    strata = defaultdict(list)
    for s in samples:
        group = strata[(s.dataset, s.category, s.label)]
        if s.image not in group:
            group.append(s.image)
    total = sum(len(v) for v in strata.values())
    keys = [sorted(strata)[i] for i in rng.permutation(len(strata))]
    for key in keys:
        strata[key] = [strata[key][i] for i in rng.permutation(len(strata[key]))]
    if total <= n_images:
        caps = {key: (len(strata[key]) + 1) // 2 for key in keys}
    else:
        caps = {key: len(strata[key]) - 1 if len(strata[key]) > 1 else 1 for key in keys}
    chosen, r = set(), 0
    while len(chosen) < min(n_images, sum(caps.values())):
        for key in keys:
            if r < caps[key] and len(chosen) < n_images:
                chosen.add(strata[key][r])
        r += 1
    return [s for s in samples if s.image in chosen], [s for s in samples if s.image not in chosen]


def spread_sample(samples, limit, seed):
    """`limit` questions taken round-robin over (dataset, category, subtask) strata, each shuffled with `seed`, in
    the json's order: the json's first N would often hold only one or two categories."""
    rng = random.Random(seed)
    strata = {}
    for i, s in enumerate(samples):
        strata.setdefault((s.dataset, s.category, s.question_type), []).append(i)
    queues = [rng.sample(v, len(v)) for _, v in sorted(strata.items())]
    rng.shuffle(queues)
    chosen = []
    for r in range(max(map(len, queues), default=0)):
        chosen += [q[r] for q in queues if r < len(q)]
    return [samples[i] for i in sorted(chosen[:limit])]


def stats(samples) -> str:
    """Table of question counts per dataset x question type x answer letter ('box' for grounding)."""
    count = Counter((s.dataset, s.question_type, s.answer if s.options else "box") for s in samples)
    letters = {a for _, _, a in count if a != "box"}
    cols = sorted(letters | set("ABCDE")) + ["box"]           # a sixth option (F...) gets its column, not dropped
    lines = [f"{'dataset':<14}{'type':<24}" + "".join(f"{c:>6}" for c in cols) + f"{'total':>7}"]
    order = QUESTION_TYPES + [GROUNDING]
    for ds, qt in sorted({(d, q) for d, q, _ in count}, key=lambda x: (x[0], order.index(x[1]))):
        row = [count[(ds, qt, c)] for c in cols]
        lines.append(f"{ds:<14}{qt:<24}" + "".join(f"{v:>6}" for v in row) + f"{sum(row):>7}")
    lines.append(f"{len(samples)} questions on {len({s.image for s in samples})} images")
    return "\n".join(lines)


@dataclass
class SynthConfig:
    out: str = cli.option(cli.REQUIRED, "folder to write the synthetic set into", positional=True)
    seed: int = cli.option(0, "seed of the painted defects")


@dataclass
class BuildConfig:
    root: str = cli.option(cli.REQUIRED, "dataset folder: ROOT/<category>/{train/good,test/<defect>,ground_truth}/...",
                           positional=True)
    out: str = cli.option(cli.REQUIRED, "the MMAD-schema json to write")
    name: str | None = cli.option(None, "dataset name (first key component); default: ROOT's folder name")
    seed: int = cli.option(0, "seed of the option shuffle and the random templates")


@dataclass
class StatsConfig:
    file: str = cli.option(cli.REQUIRED, "an MMAD-schema json", positional=True)
    root: str = cli.option(cli.REQUIRED, "the folder its image paths are relative to")


COMMANDS = {  # subcommand: (its settings, one-line help, longer description)
    "synth": (SynthConfig, "write the synthetic defect set (MVTec-AD layout) to OUT", None),
    "build": (BuildConfig, "MVTec-layout folder -> MMAD-schema json; load it with --root = ROOT's parent",
              "Keys are NAME/<path inside ROOT>, so load the json with the PARENT of ROOT as data root. With --name "
              "differing from ROOT's folder name, the data root must hold a folder (or in-root symlink) called NAME "
              "with ROOT's content."),
    "stats": (StatsConfig, "count questions per dataset x type x answer letter", None),
}


def main(argv=None) -> int:
    p = cli.parser(__doc__.split("\n")[0], prog="data.py")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (config_cls, help, description) in COMMANDS.items():
        cli.add_flags(sub.add_parser(name, help=help, description=description or help), config_cls)
    args = cli.given(p, argv)
    command = args.pop("command")
    cfg = COMMANDS[command][0](**args)
    with cli.user_errors("data.py"):
        if getattr(cfg, "seed", 0) < 0:  # numpy's own line would not say which flag
            raise ValueError(f"--seed {cfg.seed}: pass a non-negative integer")
        if command == "synth":
            import synth  # synth.py imports this module for build: imported here, not at the top
            if os.path.exists(cfg.out) and not os.path.isdir(cfg.out):
                raise ValueError(f"{cfg.out}: is a file; pass a folder to write the synthetic set into")
            try:
                synth.synth(cfg.out, cfg.seed)
            except OSError as e:  # a file on the way, a read-only folder, a full disk
                raise ValueError(f"{cfg.out}: cannot write the synthetic set there ({e.strerror or e}); "
                                 "pass a writable folder") from None
            print(f"wrote {cfg.out}")
        elif command == "build":
            import mvtec  # mvtec.py imports this module's decoder: imported here, not at the top
            out = mvtec.build(cfg.root, cfg.out, cfg.name, cfg.seed)
            root = os.path.abspath(cfg.root)
            load = os.path.dirname(root) if cfg.name in (None, os.path.basename(root)) else \
                f"a folder holding {cfg.name}/ with {root}'s content"
            print(f"wrote {len(out)} images, {sum(len(r['conversation']) for r in out.values())} questions to "
                  f"{cfg.out}; load it with root {load}")
        else:
            print(stats(load_mmad(cfg.file, cfg.root)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
