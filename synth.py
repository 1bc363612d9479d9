"""synth.py — a synthetic industrial defect set in MVTec-AD layout, drawn procedurally, and its cached build.

`synth` draws 5 categories x (16 train/good, 8 test/good, 3 defect kinds x 5) 224x224 PNGs with
pixel masks in MVTec-AD layout (~200 images, a few seconds); `ensure_synthetic` builds it once into
$ANOMALYR1_CACHE or ~/.cache/anomalyr1 (subfolder synth-v1), atomically, and turns it into MMAD-schema
questions with mvtec.build.

CLI:  python data.py synth OUT [--seed S]
"""
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image, ImageDraw

import data
import mvtec

S = 224                                   # image side in pixels
N_TRAIN, N_TEST_GOOD, N_PER_DEFECT = 16, 8, 5
YY, XX = np.mgrid[0:S, 0:S].astype(np.float32)


def _mask(draw) -> np.ndarray:
    """Rasterise shapes drawn by `draw(ImageDraw)` into a bool [S, S] mask."""
    m = Image.new("L", (S, S))
    draw(ImageDraw.Draw(m))
    return np.asarray(m) > 0


def _noise(rng, cell, amp) -> np.ndarray:
    """Smooth noise: coarse Gaussian grid upsampled, so textures vary yet PNGs stay small."""
    n = rng.normal(0, amp, (S // cell, S // cell)).astype(np.float32)
    return np.asarray(Image.fromarray(n, mode="F").resize((S, S), Image.BILINEAR))


def _point(rng, region):
    ys, xs = np.nonzero(region)
    i = rng.integers(len(ys))
    return float(xs[i]), float(ys[i])


def _blob(rng, region, r, clip=None):
    """Irregular polygon of radius ~r at a random point of `region`, clipped to `clip` (default: region)."""
    cx, cy = _point(rng, region)
    a = np.sort(rng.uniform(0, 2 * np.pi, 14))
    rad = r * rng.uniform(0.6, 1.2, 14)
    pts = list(zip((cx + rad * np.cos(a)).tolist(), (cy + rad * np.sin(a)).tolist()))
    return _mask(lambda d: d.polygon(pts, fill=255)) & (region if clip is None else clip)


def _line(rng, region, length, width, turn, clip=None):
    """Polyline from a point of `region`; small `turn` = straight scratch, large = jagged crack."""
    x, y = _point(rng, region)
    ang, pts = rng.uniform(0, 2 * np.pi), [(x, y)]
    for _ in range(8):
        ang += rng.uniform(-turn, turn)
        x, y = x + length / 8 * np.cos(ang), y + length / 8 * np.sin(ang)
        pts.append((float(x), float(y)))
    return _mask(lambda d: d.line(pts, fill=255, width=width)) & (region if clip is None else clip)


def _paint(img, mask, colour, alpha=1.0):
    img[mask] = (1 - alpha) * img[mask] + alpha * np.asarray(colour, np.float32)


def _metal_plate(rng, defect):
    img = np.full((S, S, 3), 45, np.float32) + _noise(rng, 8, 4)[..., None]
    m = rng.integers(12, 22, 4)
    plate = (XX >= m[0]) & (XX < S - m[1]) & (YY >= m[2]) & (YY < S - m[3])
    streaks = np.repeat(rng.normal(0, 5, (S, 1)), S, 1)            # brushed: per-row streaks along x
    tone = 150 + rng.uniform(-15, 15) + 0.15 * rng.uniform(-1, 1) * (XX - S / 2) + streaks + _noise(rng, 4, 3)
    img[plate] = (tone[..., None] * np.array([1.0, 1.0, 1.04]))[plate]
    for cx, cy in [(m[0] + 16, m[2] + 16), (S - m[1] - 16, m[2] + 16), (m[0] + 16, S - m[3] - 16),
                   (S - m[1] - 16, S - m[3] - 16)]:                # four screws
        _paint(img, _mask(lambda d: d.ellipse([cx - 7, cy - 7, cx + 7, cy + 7], fill=255)), (95, 95, 100))
        _paint(img, _mask(lambda d: d.line([cx - 5, cy, cx + 5, cy], fill=255, width=2)), (40, 40, 45))
    inner = plate & (XX > m[0] + 30) & (XX < S - m[1] - 30) & (YY > m[2] + 30) & (YY < S - m[3] - 30)
    if defect == "scratch":
        mask = _line(rng, inner, rng.uniform(50, 90), 2, 0.12, plate)
        _paint(img, mask, (240, 240, 245))
    elif defect == "hole":
        cx, cy = _point(rng, inner)
        r = rng.uniform(6, 11)
        mask = _mask(lambda d: d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255))
        _paint(img, mask, (12, 12, 14))
    elif defect == "stain":
        mask = _blob(rng, inner, rng.uniform(12, 20), plate)
        _paint(img, mask, (150, 75, 25), 0.75)
    return img, (mask if defect else None)


def _fabric(rng, defect):
    base = np.array([(60, 80, 150), (190, 170, 130), (120, 40, 50)][rng.integers(3)]) + rng.uniform(-12, 12, 3)
    p = rng.uniform(5.5, 7.0)
    warp, weft = np.sin(2 * np.pi * (XX + rng.uniform(0, p)) / p), np.sin(2 * np.pi * (YY + rng.uniform(0, p)) / p)
    weave = np.where((np.floor(XX / p) + np.floor(YY / p)) % 2 == 0, warp, weft)   # basket weave
    img = base * (0.85 + 0.12 * weave + _noise(rng, 8, 0.03))[..., None]
    region = (XX > 12) & (XX < S - 12) & (YY > 12) & (YY < S - 12)
    if defect == "hole":
        mask = _blob(rng, region, rng.uniform(7, 12))
        _paint(img, mask, (18, 18, 18))
    elif defect == "stain":
        mask = _blob(rng, region, rng.uniform(12, 22))
        _paint(img, mask, (80, 55, 15) if base.mean() > 120 else (220, 200, 60), 0.7)
    elif defect == "thread":
        mask = _line(rng, region, rng.uniform(60, 110), 3, 0.3)
        _paint(img, mask, (30, 30, 30) if base.mean() > 120 else (235, 235, 225))
    return img, (mask if defect else None)


def _bottle_top(rng, defect):
    img = np.full((S, S, 3), 25, np.float32) + _noise(rng, 8, 4)[..., None]
    cx, cy, R = S / 2 + rng.uniform(-6, 6), S / 2 + rng.uniform(-6, 6), 92 + rng.uniform(-4, 4)
    dist = np.hypot(XX - cx, YY - cy)
    top = dist < R
    tone = 200 + rng.uniform(-12, 12) - 25 * (dist / R) ** 2 + _noise(rng, 8, 3)     # seen from above: radial shading
    img[top] = np.stack([tone, tone, tone + 5], -1)[top]
    _paint(img, (dist >= 0.70 * R) & (dist < 0.78 * R), (115, 115, 120))               # groove between rim and cap
    if defect == "crack":
        mask = _line(rng, top & (dist > 0.4 * R) & (dist < 0.85 * R), rng.uniform(45, 70), 3, 0.7, top)
        _paint(img, mask, (45, 40, 35))
    elif defect == "contamination":
        x, y = _point(rng, top & (dist < 0.9 * R))
        mask = np.zeros((S, S), bool)
        for _ in range(rng.integers(3, 7)):                                           # a cluster of specks
            sx, sy, r = x + rng.uniform(-14, 14), y + rng.uniform(-14, 14), rng.uniform(2, 4.5)
            mask |= _mask(lambda d: d.ellipse([sx - r, sy - r, sx + r, sy + r], fill=255))
        mask &= top
        _paint(img, mask, (75, 50, 30))
    elif defect == "broken":                                                          # a wedge of the rim is gone
        a0, span = rng.uniform(-np.pi, np.pi), rng.uniform(0.45, 0.8)
        ang = (np.arctan2(YY - cy, XX - cx) - a0 + np.pi) % (2 * np.pi) - np.pi
        mask = top & (dist >= R - rng.uniform(10, 18)) & (np.abs(ang) < span / 2)
        _paint(img, mask, (25, 25, 25))
    return img, (mask if defect else None)


def _pcb(rng, defect):
    board = np.array([20, 100, 45]) + rng.uniform(-10, 10, 3)
    img = board * (1 + _noise(rng, 8, 0.04))[..., None]
    parts = []
    for c in (45, 112, 179):                                                          # copper traces on a grid
        _paint(img, _mask(lambda d: d.line([8, c, S - 8, c], fill=255, width=3)), (200, 160, 60))
        _paint(img, _mask(lambda d: d.line([c, 8, c, S - 8], fill=255, width=3)), (200, 160, 60))
    for k in range(9):                                                                # ICs and pad pairs
        x, y = 45 + 67 * (k % 3) + rng.uniform(-4, 4), 45 + 67 * (k // 3) + rng.uniform(-4, 4)
        if k % 2 == 0:
            box = [x - 16, y - 11, x + 16, y + 11]
            _paint(img, _mask(lambda d: d.rectangle([x - 18, y - 13, x + 18, y + 13], fill=255)), (190, 190, 195))
            _paint(img, _mask(lambda d: d.rectangle(box, fill=255)), (25, 25, 28))
        else:
            box = [x - 14, y - 7, x + 14, y + 7]
            _paint(img, _mask(lambda d: d.rectangle(box, fill=255)), (200, 200, 205))
            _paint(img, _mask(lambda d: d.rectangle([x - 3, y - 7, x + 3, y + 7], fill=255)), board)
        parts.append(box)
    region = (XX > 12) & (XX < S - 12) & (YY > 12) & (YY < S - 12)
    if defect == "missing_part":                                                      # a component never placed
        x0, y0, x1, y1 = parts[rng.integers(9)]
        mask = _mask(lambda d: d.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], fill=255))
        _paint(img, mask, board)
    elif defect == "scratch":
        mask = _line(rng, region, rng.uniform(50, 90), 2, 0.1)
        _paint(img, mask, (205, 235, 205))
    elif defect == "contamination":                                                   # a stray solder blob
        mask = _blob(rng, region, rng.uniform(6, 11))
        _paint(img, mask, (165, 165, 170))
    return img, (mask if defect else None)


def _pill(rng, defect):
    img = np.full((S, S, 3), (35, 35, 40), np.float32) + _noise(rng, 8, 4)[..., None]
    cx, cy = S / 2 + rng.uniform(-8, 8), S / 2 + rng.uniform(-8, 8)
    a, b = 85 + rng.uniform(-5, 5), 42 + rng.uniform(-3, 3)                           # ellipse half-axes
    e = ((XX - cx) / a) ** 2 + ((YY - cy) / b) ** 2
    pill = e < 1
    tone = 235 + rng.uniform(-8, 8) - 30 * e + _noise(rng, 8, 2)
    img[pill] = np.stack([tone, tone - 3, tone - 10], -1)[pill]
    ys, xs = np.nonzero(e < 0.8)
    dots = rng.integers(len(ys), size=25)                                             # red speckles like MVTec's pill
    dot = lambda d: [d.ellipse([xs[i] - 1.5, ys[i] - 1.5, xs[i] + 1.5, ys[i] + 1.5], fill=255) for i in dots]
    _paint(img, _mask(dot), (180, 60, 50))
    if defect == "crack":
        mask = _line(rng, e < 0.6, rng.uniform(30, 50), 2, 0.8, pill)
        _paint(img, mask, (60, 55, 50))
    elif defect == "stain":
        mask = _blob(rng, e < 0.6, rng.uniform(8, 14), pill)
        _paint(img, mask, (200, 150, 40), 0.7)
    elif defect == "chip":                                                            # a bite out of the edge
        t = rng.uniform(0, 2 * np.pi)
        x, y, r = cx + a * np.cos(t), cy + b * np.sin(t), rng.uniform(12, 18)
        mask = _mask(lambda d: d.ellipse([x - r, y - r, x + r, y + r], fill=255)) & pill
        _paint(img, mask, (35, 35, 40))
    return img, (mask if defect else None)


SYNTH_CATEGORIES = {"metal_plate": (_metal_plate, ["scratch", "hole", "stain"]),
                    "fabric": (_fabric, ["hole", "stain", "thread"]),
                    "bottle_top": (_bottle_top, ["crack", "contamination", "broken"]),
                    "pcb": (_pcb, ["missing_part", "scratch", "contamination"]),
                    "pill": (_pill, ["crack", "stain", "chip"])}


def synth(out_dir, seed=0) -> str:
    """Write the synthetic set in MVTec-AD layout under out_dir; identical bytes for a seed."""
    for ci, (cat, (draw, defects)) in enumerate(SYNTH_CATEGORIES.items()):
        rng = np.random.default_rng([seed, ci])            # own stream per category: no global RNG state
        jobs = [("train", "good", N_TRAIN), ("test", "good", N_TEST_GOOD)]
        jobs += [("test", d, N_PER_DEFECT) for d in defects]
        for split, kind, n in jobs:
            os.makedirs(os.path.join(out_dir, cat, split, kind), exist_ok=True)
            for i in range(n):
                img, mask = draw(rng, None if kind == "good" else kind)
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(   # level 1: 3x faster, ~same size
                    os.path.join(out_dir, cat, split, kind, f"{i:03d}.png"), compress_level=1)
                if mask is not None:
                    assert mask.any(), f"empty synthetic mask for {cat}/{kind}/{i}"
                    gt = os.path.join(out_dir, cat, "ground_truth", kind)
                    os.makedirs(gt, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(gt, f"{i:03d}_mask.png"))
    return out_dir


def ensure_synthetic(cache_dir=None) -> tuple[str, str]:
    """(root, json_path) of the synthetic set, built once per cache; safe under concurrent ranks."""
    cache = cache_dir or data.cache_dir()
    final = os.path.join(cache, "synth-v1")
    if not os.path.isfile(os.path.join(final, "questions.json")):
        print(f"building the synthetic defect set once (5 categories, about 10 s) into {final}", file=sys.stderr,
              flush=True)
        os.makedirs(cache, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".synth-v1-", dir=cache)
        try:
            mvtec.build(synth(os.path.join(tmp, "synth")), os.path.join(tmp, "questions.json"))
            data.publish_dir(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final, os.path.join(final, "questions.json")


def questions_file(cfg) -> tuple[str, str]:
    """(json path, data root) of a run's --data/--root, or of the synthetic set (built on first use)."""
    if cfg.data is None:
        root, path = ensure_synthetic()
        return path, root
    return cfg.data, cfg.root or os.path.dirname(os.path.abspath(cfg.data))
