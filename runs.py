"""A training run: its processes, its folder (metrics.jsonl, step-NNNNNN/ checkpoints, final/), its replayable order.

    OUT/metrics.jsonl        one JSON line per step
    OUT/step-NNNNNN/         a Hugging Face folder (safetensors weights, config, processor) + optimizer.safetensors
                             + trainer_state.json: everything --resume needs
    OUT/final/               the last step's Hugging Face folder alone, to load with transformers or eval.py

A folder appears only by an atomic rename of a finished .tmp-* folder, so a run killed mid-save always leaves its
last good checkpoint. Only safetensors are written (never pickle), the optimizer included.

A run is also replayable: its data order and sampling seeds are functions of (seed, step, rank) alone, so --resume
replays exactly what the uninterrupted run would have done, with no RNG state saved.
"""
import collections
import contextlib
import functools
import json
import os
import random
import resource
import shutil
import signal
import threading

import torch
import torch.distributed as dist

STATE = "trainer_state.json"


def checkpoints(out):
    """Complete step-NNNNNN folders in `out`, oldest first (a folder appears only by an atomic rename)."""
    if not os.path.isdir(out):
        return []
    names = [d for d in os.listdir(out) if d.startswith("step-") and d[5:].isdigit()
             and os.path.isfile(os.path.join(out, d, STATE))]
    return [os.path.join(out, d) for d in sorted(names)]


def find_checkpoint(folder):
    found = checkpoints(folder)
    if not found:
        raise FileNotFoundError(f"--resume {folder}: no checkpoint there (a step-NNNNNN/ folder with {STATE}); "
                                "pass the --out folder of an earlier run")
    return found[-1]


def saved_config(folder):
    """The config dict the run in `folder` was started with (its newest checkpoint's)."""
    with open(os.path.join(find_checkpoint(folder), STATE)) as f:
        return json.load(f)["config"]


def check_new_or_resumed(out, resume):
    """The checkpoint to resume from (None for a new run). A new run never writes into an old run's folder."""
    if resume:
        return find_checkpoint(resume)
    if checkpoints(out) or os.path.isfile(os.path.join(out, "metrics.jsonl")):
        raise ValueError(f"{out} already holds a run: continue it with --resume {out}, or pass a new --out")
    return None


# ----------------------------------------------------------------------------- processes

def setup_distributed():
    """(rank, world, device). torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; `python grpo.py` joins a one-rank group of
    its own, so one process and N processes run the same FSDP2 code."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank, local_world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    # torch takes every core by default; N processes on one machine then oversubscribe them (measured: 10x slower),
    # and on a shared machine even one process does (37-50 s/step instead of 1-1.5 with one busy core)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, (os.cpu_count() or 1) // local_world))
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

def read_metrics(out, up_to_step):
    """The metric rows of steps <= up_to_step (lines written after the checkpoint are dropped on resume)."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["step"] <= up_to_step]


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
    """Rename a finished folder into place (atomic); a folder already there is replaced."""
    if os.path.exists(folder):
        old = f"{folder}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


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
        tmp = os.path.join(out, ".tmp-final")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp, ignore=shutil.ignore_patterns("optimizer.safetensors", STATE))
        publish(tmp, os.path.join(out, "final"))


def restore(policy, optimizer, checkpoint, out):
    """(first step to run, metric rows so far), after loading AdamW's state from `checkpoint` (the weights came
    with the model); (1, []) for a new run. Rank 0 rewrites metrics.jsonl to the checkpoint's steps."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    start, rows = 1, []
    if checkpoint:
        set_optimizer_state_dict(policy, optimizer, load_optimizer(os.path.join(checkpoint, "optimizer.safetensors")),
                                 options=StateDictOptions(full_state_dict=True))
        with open(os.path.join(checkpoint, STATE)) as f:
            start = json.load(f)["step"] + 1
        rows = read_metrics(out, start - 1)
    if dist.get_rank() == 0:
        write_metrics(out, rows)
    return start, rows

