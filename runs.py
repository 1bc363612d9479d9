"""A training run: its processes, its folder (metrics.jsonl, step-NNNNNN/ checkpoints, final/), its replayable order.

    OUT/metrics.jsonl        one JSON line per step
    OUT/step-NNNNNN/         a Hugging Face folder (safetensors weights, config, processor) + optimizer.safetensors
                             + trainer_state.json: everything --resume needs
    OUT/final/               the last step's Hugging Face folder + trainer_state.json (the run's settings, which
                             eval.py draws its held-out split from), to load with transformers or eval.py
    OUT/run.lock             locked by rank 0 while a run writes here (see lock)

A folder appears only by an atomic rename of a finished, fsynced .tmp-* folder, so a run killed mid-save always
leaves its last good checkpoint; one damaged anyway is passed over for the previous one (newest_checkpoint). Only
safetensors are written (never pickle), the optimizer included.

A run is also replayable: its data order and sampling seeds are functions of (seed, step, rank) alone, so --resume
replays exactly what the uninterrupted run would have done, with no RNG state saved.
"""
import atexit
import collections
import contextlib
import fcntl
import functools
import json
import os
import random
import resource
import shutil
import signal
import sys
import threading

import torch
import torch.distributed as dist

STATE = "trainer_state.json"
LOCK = "run.lock"


def checkpoints(out):
    """step-NNNNNN folders in `out` (complete or damaged: see checkpoint_problem), oldest first."""
    if not os.path.isdir(out):
        return []
    names = [d for d in os.listdir(out) if d.startswith("step-") and d[5:].isdigit()
             and os.path.isfile(os.path.join(out, d, STATE))]
    return [os.path.join(out, d) for d in sorted(names)]


def checkpoint_problem(folder):
    """Why a checkpoint folder cannot be resumed from (a torn trainer_state.json, a short or empty safetensors file:
    what a disk that lost unsynced writes leaves), or None. Reads headers only."""
    from anomalyr1 import _safetensors_problem  # the header check check_model_folder makes of a model's weights
    path = os.path.join(folder, STATE)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        return f"{path}: not readable ({e})"
    if not (isinstance(state, dict) and type(state.get("step")) is int and isinstance(state.get("config"), dict)):
        return f"{path}: not a trainer state (an object with an integer step and a config)"
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            json.load(f)
        index = os.path.join(folder, "model.safetensors.index.json")
        if os.path.isfile(index):
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        else:
            shards = ["model.safetensors"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as e:
        return f"{folder}: config.json or its weights index not readable ({e})"
    for name in ["optimizer.safetensors", *shards]:
        if why := _safetensors_problem(os.path.join(folder, str(name))):
            return f"{folder}/{name} {why}"
    return None


def newest_checkpoint(folder):
    """(the newest checkpoint --resume can use, [(newer damaged checkpoint, why), ...]). Raises naming the folder
    (or the damaged file) and the fix when there is none."""
    damaged = []
    for checkpoint in reversed(checkpoints(folder)):
        why = checkpoint_problem(checkpoint)
        if why is None:
            return checkpoint, damaged
        damaged.append((checkpoint, why))
    if damaged:
        raise ValueError(f"--resume {folder}: its only checkpoint(s) are damaged, {damaged[0][1]}; restore the file "
                         "from a backup, or start over with a new --out")
    if holder := lock_holder(folder):
        raise ValueError(f"--resume {folder}: a run is training there (pid {holder} holds its {LOCK}) and has not "
                         f"saved a checkpoint yet: wait for it to end, or stop it (kill {holder}) and resume then")
    if os.path.isfile(os.path.join(folder, "metrics.jsonl")):
        raise ValueError(f"--resume {folder}: no checkpoint there yet (the run stopped before its first save); start "
                         "it over: run the command that started it again, without --resume")
    raise FileNotFoundError(f"--resume {folder}: no checkpoint there (a step-NNNNNN/ folder with {STATE}); "
                            "pass the --out folder of an earlier run")


def find_checkpoint(folder):
    return newest_checkpoint(folder)[0]


def saved_config(folder):
    """The config dict the run in `folder` was started with (its newest usable checkpoint's)."""
    with open(os.path.join(find_checkpoint(folder), STATE)) as f:
        return json.load(f)["config"]


# what --resume may change: how long the run goes on, what it logs and keeps, how it fits in memory. Any other
# setting (rewards, G, lr, data, seed, ...) would continue the checkpoint as another run than the one it belongs to
RESUME_MAY_CHANGE = ("steps", "save_every", "keep", "eval_every", "eval_questions", "log_samples", "logprob_batch",
                     "grad_checkpointing", "rollout_reshard", "dtype")


def resumed_settings(resume, given, names):
    """The saved settings ({name: value} of `names`) of the run in `resume` that the flags `given` now build on;
    a flag that would change one not in RESUME_MAY_CHANGE is refused, naming it."""
    saved = {k: v for k, v in saved_config(resume).items() if k in names}
    changed = [k for k, v in given.items() if k in saved and v != saved[k] and k not in RESUME_MAY_CHANGE]
    if changed:
        flags = ", ".join(f"--{k.replace('_', '-')} {given[k]} (the run's: {saved[k]})" for k in changed)
        raise ValueError(f"--resume {resume}: {flags}; a resumed run continues with its own settings, so leave "
                         f"{'it' if len(changed) == 1 else 'them'} out, or start a new run from its weights: "
                         f"--model {os.path.join(resume, 'final')} (or a step-*/) --out NEW_FOLDER")
    return saved


def holds_a_run(out):
    return bool(checkpoints(out)) or os.path.isdir(os.path.join(out, "final"))


def check_new_or_resumed(out, resume, say=print):
    """(the checkpoint to resume from or None for a new run, damaged newer checkpoints of `out` to delete). A new
    run never writes into another run's folder; a folder with no checkpoint yet (a run that crashed before its first
    save: metrics.jsonl, .tmp-* folders) holds nothing to lose and is started over."""
    if resume:
        checkpoint, damaged = newest_checkpoint(resume)
        for folder, why in damaged:
            say(f"{folder} is damaged ({why}); resuming from {checkpoint} instead")
        same = os.path.realpath(out) == os.path.realpath(resume)
        if not same and holds_a_run(out):
            raise ValueError(f"--out {out} already holds another run: pass a new --out to continue {resume} into, "
                             f"or --resume {out} to continue that one")
        return checkpoint, [folder for folder, _ in damaged] if same else []
    if holds_a_run(out):
        raise ValueError(f"{out} already holds a run: continue it with --resume {out}, or pass a new --out")
    if os.path.isfile(os.path.join(out, "metrics.jsonl")):
        say(f"{out} holds metrics.jsonl but no checkpoint (a run that stopped before its first save): starting over")
    return None, []


# ----------------------------------------------------------------------------- the lock on a run folder
# Rank 0 holds an fcntl.flock on OUT/run.lock for the whole run, so a second writer (a second --resume, orphaned
# torchrun workers still training) is refused rather than interleaved into the same metrics.jsonl. The OS drops the
# lock when its process dies (kill -9 included): a crash leaves at most an unlocked file, which the next run takes.

_held = {}  # this process's lock: {"path", "fd"}


def lock(out):
    """Take OUT/run.lock, creating OUT; ValueError naming --out (and the PID holding it) when it cannot be taken."""
    release()  # one run per process at a time: a run started in-process after another ended takes the lock anew
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: is a file; pass a folder for the run")
    path = os.path.join(out, LOCK)
    try:
        os.makedirs(out, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _pid_in(fd)
                os.close(fd)
                raise ValueError(f"--out {out} is in use by another run (pid {holder} holds {path}): wait for it to "
                                 f"end, or stop it (kill {holder}), or pass another --out") from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e}); pass a folder you can write") from None
    _held.update(path=path, fd=fd)
    for name in os.listdir(out):  # what a crash left half-written (we are the only writer now)
        if name.startswith(".tmp-"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
        elif name == "metrics.jsonl.tmp":
            os.remove(os.path.join(out, name))


def lock_holder(out):
    """The PID in OUT/run.lock while a run holds the lock (it is training there now), or None."""
    try:
        fd = os.open(os.path.join(out, LOCK), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released by the close below
        return None
    except BlockingIOError:
        return _pid_in(fd)
    finally:
        os.close(fd)


def _pid_in(fd):
    """The PID the lock's holder wrote into run.lock ("?" in the instant before it has written it)."""
    return os.read(fd, 64).decode(errors="replace").strip() or "?"


def release():
    """Give up this process's lock, removing its file (kept only by a crash, and then unlocked)."""
    if _held:
        with contextlib.suppress(OSError):
            if os.stat(_held["path"]).st_ino == os.fstat(_held["fd"]).st_ino:
                os.remove(_held["path"])
        os.close(_held.pop("fd"))
        _held.clear()


atexit.register(release)


def open_run(out, resume, device):
    """The checkpoint to resume from (None: a new run) once this process group owns `out`: rank 0 locks it, and
    every rank stops if that failed (rank 0 says why). Damaged checkpoints newer than the one resumed from are
    deleted (their steps are redone)."""
    rank = dist.get_rank()
    error = None
    if rank == 0:
        try:
            lock(out)
        except ValueError as e:
            error = e
    if all_reduce({"failed": error is not None}, device)["failed"]:
        # the other ranks' line goes through cli.exit_with too, which lets rank 0's be the one printed
        raise error or ValueError(f"--out {out}: refused on rank 0 (its line says why)")
    try:
        checkpoint, damaged = check_new_or_resumed(out, resume, say=note)
    except BaseException:
        release()  # a refused run leaves no lock file behind (in another run's folder, say)
        raise
    dist.barrier()  # every rank has chosen before rank 0 deletes
    if rank == 0:
        for folder in damaged:
            remove(folder)
    return checkpoint


def note(text):
    """A line for the user, from rank 0 only."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"grpo: {text}", file=sys.stderr)


def remove(path):
    """Delete a file or folder; a folder disappears at once (renamed away, then deleted)."""
    if os.path.isdir(path):
        gone = os.path.join(os.path.dirname(path), f".tmp-gone-{os.path.basename(path)}")
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(path, gone)
        shutil.rmtree(gone, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


# ----------------------------------------------------------------------------- processes

def setup_distributed():
    """(rank, world, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; `python grpo.py` joins a one-rank group of
    its own, so one process and N processes run the same FSDP2 code."""
    rank, world, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), \
        int(os.environ.get("LOCAL_RANK", 0))
    set_threads()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if world > 1:
            dist.init_process_group(backend)  # torchrun's rendezvous (MASTER_ADDR/PORT)
        else:  # an in-process store: nothing to rendezvous with, no port to find
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return rank, world, device


_STARTUP_THREADS = torch.get_num_threads()  # torch's default here, unless the user set it before importing us


def set_threads():
    """One torch thread per process, unless the user chose: OMP_NUM_THREADS set, or torch.set_num_threads called.
    torch takes a thread per core by default, and its threads spin-wait on each other: next to any other busy
    process (a second rank, another job) a step stalls. The tiny model's matrices are too small for a second thread
    to pay: `python grpo.py --steps 5` (4 completions of ~30 tokens a step) on 2 cores took 1.8-2.9 s/step with 1
    thread and 5-36 s with 2 while another process burnt one core; without it, 0.6-1.0 s with 1 thread, 0.4-10 s
    with 2 (README). On a GPU the threads only feed it."""
    if "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == _STARTUP_THREADS:
        torch.set_num_threads(1)


def all_reduce(values, device, op="sum"):
    """{name: float} summed (or maxed) over ranks, in one all_reduce."""
    t = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return dict(zip(values, t.tolist()))


@contextlib.contextmanager
def fsdp_hooks_paused(model):
    """Decoding skips FSDP2's forward hooks on the root and decoder layers already gathered (plain-tensor parameters,
    not DTensors: grpo.rollout keeps them so; generate, a registered FSDP forward method, is hooked once). They do
    nothing but cost Python time per unit per token: 8% of a bench step, tiny model. Per-token inputs are ids and
    states already in the compute dtype: no cast is lost. Private handles (no FSDP2 API does this): if torch renames
    them, the hooks stay (slower, the same tokens)."""
    from torch.distributed.fsdp import FSDPModule  # imports torch.distributed.tensor too
    units = [m for m in (model, *model.model.language_model.layers) if isinstance(m, FSDPModule)
             and not any(isinstance(p, torch.distributed.tensor.DTensor) for p in m.parameters())]
    saved = [(m, m._forward_pre_hooks.copy(), m._forward_hooks.copy()) for m in units]
    for m in units:  # both or neither: a post-forward hook alone would reshard the unit
        pre, post = (getattr(m._get_fsdp_state(), f"_{x}_forward_hook_handle", None) for x in ("pre", "post"))
        if pre is not None and post is not None:
            m._forward_pre_hooks.pop(pre.id), m._forward_hooks.pop(post.id)
    try:
        yield
    finally:
        for m, pre, post in saved:  # exactly the hooks that were there, in their order
            m._forward_pre_hooks.clear(), m._forward_pre_hooks.update(pre)
            m._forward_hooks.clear(), m._forward_hooks.update(post)


# ----------------------------------------------------------------------------- data order, seeds, stops

@functools.lru_cache(maxsize=4)
def epoch_order(n, seed):
    return random.Random(seed).sample(range(n), n)


def step_prompts(train_set, cfg, step):
    """The P prompts of `step` (1-based), identical on every rank: global prompts [(step-1)·P, step·P) of the
    concatenated epochs, each epoch a permutation seeded by seed + epoch. Rank r then takes every world-th."""
    P, n = cfg.prompts_per_step, len(train_set)
    return [train_set[epoch_order(n, cfg.seed + i // n)[i % n]] for i in range((step - 1) * P, step * P)]


def seed_step(cfg, step, rank):
    """Sampling randomness is a function of (seed, step, rank) alone: no RNG state is needed to resume."""
    s = cfg.seed * 1_000_003 + step * 1009 + rank
    random.seed(s)
    torch.manual_seed(s)  # also seeds CUDA


class Stopped(Exception):
    """grpo.train stopped early on a signal, after saving: `--resume` continues it."""

    def __init__(self, signum):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_signals():
    """SIGTERM/SIGINT set stop["signal"] instead of killing: the step finishes, saves, and the run exits cleanly."""
    stop, handlers = {"signal": 0}, {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda signum, frame: stop.update(signal=signum))
    try:
        yield stop
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def peak_memory_gib(device):
    """This process's peak so far: memory torch allocated on the GPU, or the resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB



# ----------------------------------------------------------------------------- metrics.jsonl

def read_metrics(out, up_to_step, say=lambda text: None):
    """The metric rows of steps <= up_to_step (lines written after the checkpoint are dropped on resume). A line that
    is not a whole row (a crash or a full disk tore it) is dropped, saying so: its step is redone if it came after
    the checkpoint."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    rows, torn = [], []
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                row = json.loads(line) if line.strip() else None
            except (ValueError, RecursionError):
                row = {}
            if row is not None and not (isinstance(row, dict) and type(row.get("step")) is int):
                torn.append(number)
            elif row is not None and row["step"] <= up_to_step:
                rows.append(row)
    if torn:
        say(f"{path}: dropped {len(torn)} torn line(s) ({', '.join(map(str, torn[:5]))}), e.g. from a crash mid-write")
    return rows


def write_metrics(out, rows):
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, "metrics.jsonl.tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, os.path.join(out, "metrics.jsonl"))


def append_metrics(out, row):
    with open(os.path.join(out, "metrics.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


# ----------------------------------------------------------------------------- checkpoints

def save_optimizer(osd, path):
    """AdamW's state as safetensors (never pickle): tensors keyed state.<param>.<key>, param groups as metadata."""
    from safetensors.torch import save_file
    tensors = {f"state.{name}.{k}": v.contiguous() for name, s in osd["state"].items() for k, v in s.items()}
    save_file(tensors, path, metadata={"param_groups": json.dumps(osd["param_groups"])})


def load_optimizer(path):
    from safetensors import safe_open
    from safetensors.torch import load_file
    state = collections.defaultdict(dict)
    for key, v in load_file(path).items():
        name, k = key[len("state."):].rsplit(".", 1)
        state[name][k] = v
    with safe_open(path, "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
    return {"state": dict(state), "param_groups": groups}


def publish(tmp, folder):
    """Rename a finished folder into place (atomic); a folder already there is replaced. Its files are synced to
    disk first: after a power loss a published checkpoint is whole, not a folder of empty files."""
    for parent, _, names in os.walk(tmp):
        for name in names:
            with open(os.path.join(parent, name), "rb") as f:
                os.fsync(f.fileno())
    if os.path.exists(folder):
        old = f"{folder}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)
    parent = os.open(os.path.dirname(os.path.abspath(folder)), os.O_RDONLY)
    try:
        os.fsync(parent)  # the rename itself
    finally:
        os.close(parent)


def fix_architectures(folder):
    """FSDP2 renames the model's class FSDP<class>; config.json must name the plain class so AutoModel loads it."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        config = json.load(f)
    if any(a.startswith("FSDP") for a in config.get("architectures") or []):
        config["architectures"] = [a.removeprefix("FSDP") for a in config["architectures"]]
        with open(path, "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)


def save(policy, processor, optimizer, out, step, config, keep, final=False):
    """OUT/step-NNNNNN/ (and OUT/final/ if `final`), keeping the newest `keep` step folders. `config`: the run's
    settings as a dict, for --resume. Called by every rank: gathering the full state dicts is a collective;
    rank 0 writes."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    sd = get_model_state_dict(policy, options=options)  # every rank gathers, rank 0 keeps the tensors
    osd = get_optimizer_state_dict(policy, optimizer, options=options)
    if dist.get_rank() != 0:
        return
    if final:  # a final/ of an earlier, shorter --steps goes before anything newer appears: a kill from here on
        remove(os.path.join(out, "final"))  # leaves final/ missing (--resume writes it), never stale
    name = f"step-{step:06d}"
    folder, tmp = os.path.join(out, name), os.path.join(out, f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    processor.save_pretrained(tmp)
    save_optimizer(osd, os.path.join(tmp, "optimizer.safetensors"))
    with open(os.path.join(tmp, STATE), "w") as f:
        # no RNG state: every step re-seeds from (seed, step, rank), and the data position is the step number
        json.dump({"step": step, "config": config}, f)
    if policy.lm_head.weight is policy.get_input_embeddings().weight:
        sd.pop("lm_head.weight", None)  # tied to the embeddings: stored once (FSDP's full state dict has two copies)
    policy.save_pretrained(tmp, state_dict=sd, safe_serialization=True)  # last: it empties sd in place
    fix_architectures(tmp)
    publish(tmp, folder)
    for old in checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    if final:
        write_final(folder, out)


def write_final(checkpoint, out):
    """OUT/final/: the checkpoint's Hugging Face folder without the optimizer (only --resume needs it). Its STATE
    stays: the run's settings (shots, the few-shot draw) go wherever final/ is copied, so eval.py scores it as trained
    on images it did not train on. --resume still never picks final/: only step-NNNNNN/ folders are checkpoints."""
    tmp = os.path.join(out, ".tmp-final")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint, tmp, ignore=shutil.ignore_patterns("optimizer.safetensors"))
    publish(tmp, os.path.join(out, "final"))


def restore(policy, optimizer, checkpoint, out):
    """(first step to run, metric rows so far), after loading AdamW's state from `checkpoint` (the weights came
    with the model); (1, []) for a new run. Rank 0 rewrites metrics.jsonl to the checkpoint's steps (read from the
    checkpoint's run folder: with --out elsewhere the new folder starts with the old run's rows)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    start, rows = 1, []
    if checkpoint:
        set_optimizer_state_dict(policy, optimizer, load_optimizer(os.path.join(checkpoint, "optimizer.safetensors")),
                                 options=StateDictOptions(full_state_dict=True))
        with open(os.path.join(checkpoint, STATE)) as f:
            start = json.load(f)["step"] + 1
        rows = read_metrics(os.path.dirname(checkpoint), start - 1, say=note)
    if dist.get_rank() == 0:
        write_metrics(out, rows)
    return start, rows


def finish(checkpoint, out, steps):
    """Rank 0, when --resume finds nothing left to train: write final/ if a kill during the last save kept it from
    appearing (the newest checkpoint is the last step's); the run is over, its lock given up."""
    with open(os.path.join(checkpoint, STATE)) as f:
        step = json.load(f)["step"]
    if os.path.isdir(os.path.join(out, "final")):
        note(f"{out} is already at step {step} of --steps {steps}; nothing to do (raise --steps to train further)")
    else:
        write_final(checkpoint, out)
        note(f"{out} was at step {step} of --steps {steps} without final/ (stopped while saving it): wrote "
             f"{os.path.join(out, 'final')} from {checkpoint}")
    release()
