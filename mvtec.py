"""Any MVTec-layout folder -> MMAD-schema questions (`python data.py build ROOT --out questions.json`).

`build` asks, per test image (MMAD wording, options shuffled so every gold answer is dealt evenly
over the letters): Anomaly Detection (Yes./No.); for defective images Defect Classification (folder
name vs. the category's other defect kinds, then generic ones), Defect Localization (3x3 grid cell
of the mask's centroid) and Defect Grounding; Object Classification (category vs. other categories).
similar_templates: the category's train/good images ranked, as MMAD, at 128x128 by
mean(1 - Bhattacharyya distance of 8x8x8 RGB histograms, grayscale SSIM over 7x7 windows), top 5;
random_templates: 5 drawn with the seeded RNG. A defective image without a (non-empty) mask loses
only its Localization/Grounding turns and a folder like VisA's `bad` (no kind) its Classification
turn; build prints how many, nothing is dropped silently.

Folder layouts `build` reads (one folder per category under ROOT):
  MVTec-AD      cat/train/good/*.png  cat/test/<defect>/*.png  cat/ground_truth/<defect>/<id>_mask.png
  VisA (1cls)   cat/train/good/*.JPG  cat/test/bad/*.JPG       cat/ground_truth/bad/<id>.png
  MVTec-LOCO    as MVTec-AD but cat/ground_truth/<type>/<id>/000.png, 001.png ... (union of masks;
                mask_path is then the folder <id>/)
  MVTec 3D-AD   cat/train/good/rgb/*.png  cat/test/<defect>/rgb/<id>.png  cat/test/<defect>/gt/<id>.png

Key/root convention of `build ROOT`: keys are `NAME/<path inside ROOT>`, NAME defaulting to ROOT's
folder name, so the data root to load the json with is the PARENT of ROOT:
    python data.py build /data/mvtec --out mvtec.json      ->  load_mmad("mvtec.json", "/data")
With --name NAME different from the folder name, load with a root that holds a folder (or a
symlink inside that root) called NAME with ROOT's content.
"""
import json
import os
import sys
from collections import defaultdict

import numpy as np
from PIL import Image

import cli
from data import GROUNDING, _mask_files, _read_mask, open_image, write_atomic

IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp")
REGIONS = ["Top left.", "Top.", "Top right.", "Left.", "Center.", "Right.", "Bottom left.", "Bottom.", "Bottom right."]
GENERIC_DEFECTS = ["scratch", "hole", "stain", "crack", "contamination", "deformation", "missing part", "color defect"]
GENERIC_PRODUCTS = ["bottle", "cable", "capsule", "carpet", "hazelnut", "metal nut", "screw", "transistor", "tile"]
UNNAMED = {"bad", "defect", "defective", "anomaly", "ng"}   # VisA's test/bad: no kind to ask about
GROUNDING_Q = "Locate the defect in the object. Output its bounding box in JSON format."


def phrase(name, strip_digits=False) -> str:
    """Folder name -> option text: 'missing_part' -> 'Missing part.' ('pcb1' -> 'Pcb.' for objects)."""
    t = name.replace("_", " ").replace("-", " ").strip()
    t = t.rstrip("0123456789").strip() if strip_digits else t
    return t[:1].upper() + t[1:] + "."


def _choice(rng, decks, question, gold, candidates, qtype):
    """Multiple-choice turn: gold + the first distinct distractors (at most 4 options).

    Gold's letter is dealt from a shuffled deck per (type, option count, gold text), refilled when
    empty, so letters are balanced by construction for every answer (e.g. "Yes." sits at A for half
    the defective images) instead of only on average.
    """
    opts = [gold]
    for c in candidates:
        if len(opts) < 4 and str(c).lower() not in [o.lower() for o in opts]:
            opts.append(str(c))
    deck = decks[(qtype, len(opts), gold)]
    if not deck:
        deck.extend(rng.permutation(len(opts)).tolist())
    pos = deck.pop()
    order = [opts[1:][i] for i in rng.permutation(len(opts) - 1)]
    order.insert(pos, gold)
    letters = "ABCDE"[:len(opts)]
    return {"Question": question, "Options": dict(zip(letters, order)), "Answer": letters[pos], "type": qtype}


def _images(folder) -> list[str]:
    if os.path.isdir(os.path.join(folder, "rgb")):     # MVTec 3D-AD keeps the colour images in rgb/
        folder = os.path.join(folder, "rgb")
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMG_EXT))


def _find_mask(cat_dir, defect, img) -> str | None:
    """Try each layout's mask naming; a folder is returned for MVTec-LOCO (union of its PNGs)."""
    stem, gt = os.path.splitext(os.path.basename(img))[0], os.path.join(cat_dir, "ground_truth", defect)
    cands = [os.path.join(gt, stem + "_mask.png"), os.path.join(gt, stem + ".png")]      # MVTec-AD, VisA
    if os.path.basename(os.path.dirname(img)) == "rgb":                                 # MVTec 3D-AD
        cands.insert(0, os.path.join(os.path.dirname(os.path.dirname(img)), "gt", stem + ".png"))
    for c in cands:
        if os.path.isfile(c):
            return c
    loco = os.path.join(gt, stem)
    return loco if os.path.isdir(loco) and _mask_files(loco) else None




def _features(im):
    """MMAD's template similarity inputs at 128x128: joint 8x8x8 RGB histogram and grayscale image."""
    im = im.resize((128, 128), Image.BILINEAR)
    rgb = np.asarray(im) // 32                                                        # [128, 128, 3] bins 0..7
    hist = np.bincount((rgb[..., 0] * 64 + rgb[..., 1] * 8 + rgb[..., 2]).ravel(), minlength=512)
    return hist / hist.sum(), np.asarray(im.convert("L"), np.float64)


def _box7(a):
    """Mean over every 7x7 window (valid part) via integral images: [..., 128, 128] -> [..., 122, 122]."""
    c = np.pad(a.cumsum(-1).cumsum(-2), [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    return (c[..., 7:, 7:] - c[..., :-7, 7:] - c[..., 7:, :-7] + c[..., :-7, :-7]) / 49.0


def _template_stats(paths):
    """Per-category template features, computed once: hist [N, 512], gray [N, 128, 128], local mean/var."""
    hs, gs = map(np.stack, zip(*[_features(open_image(p)) for p in paths]))
    my = _box7(gs)                                                                    # [N, 122, 122]
    return hs, gs, my, _box7(gs * gs) - my ** 2


def _similarity(im, train):
    """score = mean(1 - Bhattacharyya distance of colour histograms, grayscale SSIM (7x7 uniform windows))."""
    (hq, gq), (hs, gs, my, vy) = _features(im), train
    bhatt = np.sqrt(np.clip(1 - np.sqrt(hs * hq).sum(1), 0, None))                     # [N], 0 = same histogram
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx = _box7(gq)                                                                    # [122, 122]
    vx, cxy = _box7(gq * gq) - mx ** 2, _box7(gq * gs) - mx * my                        # cxy [N, 122, 122]
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))).mean((1, 2))
    return (1 - bhatt + ssim) / 2                                                     # [N]


def _questions(rng, decks, cat, cats, defect, defects, mask, size) -> list[dict]:
    """MMAD-style turns for one test image; mask: bool [h, w] or None, size: the image's (W, H)."""
    bad = defect != "good"
    conv = [_choice(rng, decks, "Is there any defect in the object?", "Yes." if bad else "No.",
                    ["No." if bad else "Yes."], "Anomaly Detection")]
    if bad and defect.lower() not in UNNAMED:
        others = [phrase(d) for d in rng.permutation([d for d in defects if d not in ("good", defect)])]
        conv.append(_choice(rng, decks, "What type of defect is present in the object?", phrase(defect),
                            others + [phrase(d) for d in rng.permutation(GENERIC_DEFECTS)], "Defect Classification"))
    if mask is not None:
        ys, xs = np.nonzero(mask)
        row, col = min(int(3 * ys.mean() / mask.shape[0]), 2), min(int(3 * xs.mean() / mask.shape[1]), 2)
        gold = REGIONS[3 * row + col]                                                 # 3x3 cell of the centroid
        conv.append(_choice(rng, decks, "Where is the defect located in the image?", gold,
                            rng.permutation([r for r in REGIONS if r != gold]), "Defect Localization"))
    objs = [phrase(c, True) for c in rng.permutation([c for c in cats if c != cat])]
    conv.append(_choice(rng, decks, "What kind of product is shown in the image?", phrase(cat, True),
                        objs + [phrase(p) for p in rng.permutation(GENERIC_PRODUCTS)], "Object Classification"))
    if mask is not None:                                   # box of the mask, scaled to image pixels if sizes differ
        sx, sy = size[0] / mask.shape[1], size[1] / mask.shape[0]
        box = [int(xs.min() * sx), int(ys.min() * sy), int(round((xs.max() + 1) * sx)), int(round((ys.max() + 1) * sy))]
        conv.append({"Question": GROUNDING_Q, "Options": {}, "Answer": json.dumps({"bbox_2d": box}),
                     "type": GROUNDING})
    return conv


def _check_out(out_json):
    """--out must be a file path whose nearest existing ancestor is a folder."""
    if os.path.isdir(out_json):
        raise ValueError(f"--out {out_json}: is a folder; pass a file path such as "
                         f"{os.path.join(out_json, 'questions.json')}")
    parent = os.path.dirname(os.path.abspath(out_json))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out {out_json}: {parent} is a file, not a folder; pass a path inside a folder")


def build(root, out_json, name=None, seed=0, k=5) -> dict:
    """MVTec-layout folder -> MMAD-schema dict (also written to out_json); keys relative to ROOT's parent."""
    root = os.path.abspath(root)
    name = name or os.path.basename(root)
    if os.path.isfile(root):
        raise ValueError(f"{root}: is a file; pass the dataset FOLDER holding one sub-folder per category")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder; pass the folder holding one sub-folder per category")
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"--name {name!r}: must be one folder name (the first component of every key)")
    _check_out(out_json)                                     # before the scan: a bad --out fails in a second
    cats = sorted(c for c in os.listdir(root) if os.path.isdir(os.path.join(root, c, "test")))
    if not cats:
        raise ValueError(f"{root}: no category folders with a test/ sub-folder; pass the dataset folder "
                         "(MVTec layout: ROOT/<category>/test/<defect>/...)")
    rng, decks = np.random.default_rng(seed), defaultdict(list)
    key = lambda p: name + "/" + os.path.relpath(p, root).replace(os.sep, "/")
    out, no_mask, no_train, no_kind = {}, [], [], []
    for cat in cats:
        cdir = os.path.join(root, cat)
        defects = sorted(d for d in os.listdir(os.path.join(cdir, "test"))
                         if os.path.isdir(os.path.join(cdir, "test", d)))
        no_kind += [d for d in defects if d.lower() in UNNAMED]
        train = _images(os.path.join(cdir, "train", "good"))
        feats = _template_stats(train) if train else None     # once per category: ranking stays fast on real sets
        no_train += [] if train else [cat]
        for defect in defects:
            for img in _images(os.path.join(cdir, "test", defect)):
                mask_path = _find_mask(cdir, defect, img) if defect != "good" else None
                mask = _read_mask(mask_path) if mask_path else None
                if defect != "good" and (mask is None or not mask.any()):
                    no_mask.append(key(img))                  # reported below, never skipped silently
                    mask_path, mask = None, None
                im = open_image(img)
                sim = np.argsort(-_similarity(im, feats), kind="stable")[:k] if train else []
                rand = rng.choice(len(train), min(k, len(train)), replace=False) if train else []
                out[key(img)] = {"conversation": _questions(rng, decks, cat, cats, defect, defects, mask, im.size),
                                 "similar_templates": [key(train[i]) for i in sim],
                                 "random_templates": [key(train[i]) for i in rand],
                                 "mask_path": key(mask_path) if mask_path else None}
    if no_mask:
        print(f"build: {len(no_mask)} defective images have no (or an empty) mask; their Defect Localization and "
              f"Defect Grounding questions were skipped (first: {no_mask[0]})", file=sys.stderr)
    if no_kind:
        print(f"build: defect folders {sorted(set(no_kind))} name no defect kind; their images get no Defect "
              "Classification question", file=sys.stderr)
    if no_train:
        print(f"build: {len(no_train)} categories have no train/good images, so no templates: {', '.join(no_train)}",
              file=sys.stderr)
    if not out:
        raise ValueError(f"{root}: found no test images ({', '.join(IMG_EXT)}) under <category>/test/<defect>/")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out_json)), exist_ok=True)
        write_atomic(out_json, json.dumps(out, indent=1))   # a killed run never leaves half a json
    except OSError as e:
        raise ValueError(f"--out {out_json}: cannot write it ({e.strerror or e}); pass a writable file path") from None
    return out


def main(argv=None):
    """Not a command: an exit 0 having done nothing would read as success, so one line names the command that is."""
    cli.exit_with("mvtec.py: error: this is data.py's library, not a command; build questions from an MVTec-layout "
                  "folder with `python data.py build ROOT --out questions.json`")


if __name__ == "__main__":
    main()
