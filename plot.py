"""plot.py — draw one or several GRPO runs' training curves into one PNG.

    python plot.py runs/grpo                                   # -> runs/grpo/curves.png
    python plot.py runs/roam runs/classical --out compare.png  # ROAM vs classical GRPO, one colour per run
    python plot.py runs/grpo --smooth 5                        # moving average over 5 steps (raw points faint)

Each RUN is a run folder holding metrics.jsonl (grpo.py writes one row per step) or the metrics.jsonl itself.
Panels, each drawn only when some run logged it: the total reward and each of its parts (reward/accuracy,
reward/roam, reward/format, ...; a run with other rewards has other parts), training accuracy, reasoning/answer
consistency, KL to the reference model, the share of groups with no learning signal (all G rewards equal), and
held-out accuracy (any key starting with "heldout", e.g. what --eval-every logs) against the step it was measured at.
"""
import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass

import cli

# (title, keys): a panel shows every key of the list that a run logged; reward parts are found at run time
PANELS = [("reward (total)", ["reward"]),
          ("training accuracy", ["accuracy"]),
          ("reasoning/answer consistency", ["consistency"]),
          ("KL to the reference", ["kl"]),
          ("groups with no signal", ["zero_std_fraction"])]
# --eval-every's measures (%), in two panels so that two runs' curves stay readable
HELDOUT_PANELS = [("held-out accuracy (during training)", ["heldout_accuracy", "heldout_anomaly_detection"]),
                  ("held-out replies (during training)", ["heldout_consistency", "heldout_well_formed",
                                                          "heldout_top_letter"])]

STYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 4))]  # a panel's keys, as line styles


def read_metrics(run):
    """The rows of a run's metrics.jsonl (a folder or the file), in step order; a half-written last line is
    skipped, since a run still training may be appending it."""
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run}: no metrics.jsonl (pass a grpo.py run folder, e.g. runs/grpo)")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(ValueError, RecursionError):  # a torn line (JSONDecodeError is a ValueError)
                    rows.append(json.loads(line))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e.reason}); pass a grpo.py run folder") from None
    rows = [r for r in rows if isinstance(r, dict) and type(r.get("step")) is int]  # what grpo.py writes
    if not rows:
        raise ValueError(f"{path} holds no metrics rows yet")
    return sorted(rows, key=lambda r: r["step"])


def series(rows, key):
    """(steps, values) of the rows that hold a finite number under key."""
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


def smooth(values, k):
    """Trailing moving average over k points (k <= 1: unchanged), so a curve starts where the run starts."""
    if k <= 1:
        return list(values)
    return [sum(values[max(0, i - k + 1):i + 1]) / (i + 1 - max(0, i - k + 1)) for i in range(len(values))]


def panels(runs):
    """[(title, [keys])] of the panels some run has data for: the fixed ones, one per reward part, held-out."""
    keys = set().union(*(set(r) for rows in runs.values() for r in rows))
    parts = sorted(k for k in keys if k.startswith("reward/"))
    known = [k for _, ks in HELDOUT_PANELS for k in ks]
    other = sorted(k for k in keys if k.startswith("heldout") and k not in known)
    chosen = ([PANELS[0]] + [(f"reward part: {k.split('/', 1)[1]}", [k]) for k in parts] + PANELS[1:]
              + HELDOUT_PANELS + [("held-out, other measures", other)])
    return [(title, ks) for title, ks in chosen if any(k in keys for k in ks)]


def draw(runs, out, smooth_k=1, title=None, dpi=110):
    """runs: {label: rows}. Writes one PNG with a grid of panels; returns the panel titles drawn."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a laptop shell or CI
    import matplotlib.pyplot as plt
    chosen = panels(runs)
    cols = min(3, len(chosen))
    rows_n = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.2 * rows_n), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (panel_title, keys) in zip(axes.flat, chosen):
        for i, (label, rows) in enumerate(runs.items()):
            for j, key in enumerate(keys):
                steps, values = series(rows, key)
                if not steps:
                    continue
                name = label if len(keys) == 1 else f"{label}: {key}"
                # one run: a colour per key (the held-out panel has 5); several: a colour per run, a style per key
                style = STYLES[j % len(STYLES)] if len(runs) > 1 else "-"
                colour = colours[(i if len(runs) > 1 else j) % len(colours)]
                if smooth_k > 1:  # raw points faint behind the smoothed curve: the noise stays visible
                    ax.plot(steps, values, linestyle=style, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(values, smooth_k), linestyle=style, color=colour, label=name,
                        marker="o" if len(steps) < 12 else None, markersize=3)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(runs) > 1 or len(keys) > 1:
            ax.legend(fontsize=7, framealpha=0.6)  # the curves stay visible behind it
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return [t for t, _ in chosen]


@dataclass
class Config:
    runs: list[str] = cli.option(cli.REQUIRED, "run folders (or their metrics.jsonl)", positional=True, metavar="RUN")
    out: str | None = cli.option(None, "PNG to write (default: RUN/curves.png for one run, curves.png for several)")
    labels: str | None = cli.option(None, "comma-separated legend names, one per run (default: the folder names)")
    smooth: int = cli.option(1, "moving average over K steps (1: raw)")
    title: str | None = cli.option(None, "a title above the panels")
    dpi: int = cli.option(110, "resolution of the PNG (e.g. 70 for a small one to commit)")


def plot(cfg: Config):
    """Draw cfg.runs into one PNG; returns (its path, the panel titles drawn)."""
    labels = cfg.labels.split(",") if cfg.labels else [os.path.basename(os.path.normpath(
        os.path.dirname(r) if r.endswith(".jsonl") else r)) for r in cfg.runs]
    if len(labels) != len(cfg.runs):
        raise ValueError(f"--labels names {len(labels)} runs, but {len(cfg.runs)} were given")
    if cfg.smooth < 1:
        raise ValueError(f"--smooth {cfg.smooth}: pass a number of steps >= 1 (1: the raw points)")
    if not 10 <= cfg.dpi <= 1000:  # a figure ~16 in wide: 1000 dpi is already a 16k-pixel PNG
        raise ValueError(f"--dpi {cfg.dpi}: pass 10 to 1000 (110: the default)")
    if len(set(labels)) != len(labels):  # two runs/grpo folders from different places: keep both visible
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    runs = {label: read_metrics(run) for label, run in zip(labels, cfg.runs)}
    out = cfg.out or (os.path.join(cfg.runs[0], "curves.png") if len(cfg.runs) == 1 and
                      os.path.isdir(cfg.runs[0]) else "curves.png")
    cli.check_png_out(out)
    return out, draw(runs, out, cfg.smooth, cfg.title, cfg.dpi)


def main(argv=None):
    parser = cli.parser("Draw GRPO runs' metrics.jsonl curves into one PNG.", prog="plot.py")
    cli.add_flags(parser, Config)
    cfg = Config(**cli.given(parser, argv))
    with cli.user_errors("plot.py"):  # a missing run, a bad --labels: one line, exit 2
        out, drawn = plot(cfg)
    print(f"wrote {out}: {', '.join(drawn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
