"""Command-line plumbing shared by every script: a config dataclass becomes flags, and a mistake the user can fix
becomes one line on stderr and exit status 2, never a traceback.

    @dataclasses.dataclass
    class Config:
        group_size: int = cli.option(8, "G, completions sampled per prompt")

    parser = cli.parser("what the script does", prog="script.py")
    cli.add_flags(parser, Config)                 # --group-size GROUP_SIZE, booleans as --flag/--no-flag
    cfg = Config(**cli.given(parser, argv))       # only the flags given: layer them over saved settings
    with cli.user_errors("script.py"):            # ValueError / OSError -> `script.py: error: ...`, exit 2
        run(cfg)

A field's annotation picks the flag's shape: bool -> --flag/--no-flag; tuple[int, int] -> two values;
list[str] -> a repeatable flag; anything else one value of that type. A field without a default
(cli.REQUIRED) is a required flag, or a positional argument with `positional=True` (list[str]: one or more).
"""
import argparse
import contextlib
import dataclasses
import os
import re
import sys
import tempfile
import time
import typing

REQUIRED = dataclasses.MISSING  # cli.option(cli.REQUIRED, ...): the user must give it


def option(default, help, choices=None, positional=False, metavar=None, empty_ok=False):
    """A config field that is also a flag: its help text and, optionally, the values it may take. A text flag given
    as '' is refused unless `empty_ok` (e.g. --out '' would otherwise write into the working folder)."""
    metadata = {"help": help, "choices": choices, "positional": positional, "metavar": metavar, "empty_ok": empty_ok}
    if isinstance(default, list):  # a dataclass needs a fresh list per instance
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`prog: error: ... (see --help)`, exit 2), not the usage block.
    Its subcommands' parsers are of this class too (argparse makes them with the parent's class)."""

    def error(self, message):
        exit_with(f"{self.prog}: error: {message} (see --help)")


def parser(description, prog=None):
    return Parser(description=description, prog=prog)


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED


def non_empty(text):
    """argparse type of a text flag: '' is a mistake (an unset shell variable, say), not 'the default'."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; pass a value, or leave the flag out for its default")
    return text


def add_flags(parser, config_cls, shown_default=None):
    """One flag per field of `config_cls`: --field-name, typed by the field's annotation. `shown_default(field)`
    is the default the help text names (e.g. one that depends on the model); by default the field's own.
    Flags left out do not appear in the parsed namespace, so `given` returns only what the user said."""
    for f in dataclasses.fields(config_cls):
        meta, default = f.metadata, _default(f)
        shown = shown_default(f) if shown_default else default
        help = meta.get("help", "") + (f" (default: {shown})" if shown not in (None, REQUIRED, []) else "")
        if f.type is bool:
            parser.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help)
            continue
        kind = ([t for t in typing.get_args(f.type) if t is not type(None)] or [f.type])[0]  # X | None -> X
        shape = {}
        if typing.get_origin(f.type) is tuple:      # tuple[int, int]: two values
            kind, shape = typing.get_args(f.type)[0], {"nargs": len(typing.get_args(f.type))}
        elif typing.get_origin(f.type) is list:     # list[str]: the flag repeats
            kind, shape = typing.get_args(f.type)[0], {"action": "append"}
        kind = non_empty if kind is str and not meta.get("empty_ok") else kind
        metavar = meta.get("metavar") or (None if meta.get("choices") else f.name.upper())  # None: {a,b} shown
        if meta.get("positional"):  # list[str]: one or more values
            many = {"nargs": "+"} if typing.get_origin(f.type) is list else {}
            parser.add_argument(f.name, type=kind, choices=meta.get("choices"), metavar=metavar, help=help, **many)
            continue
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, choices=meta.get("choices"), help=help,
                            metavar=metavar, required=default is REQUIRED, default=argparse.SUPPRESS, **shape)


def parse_options(text):
    """--options 'A=Yes.,B=No.' -> {"A": "Yes.", "B": "No."}; commas may appear inside an option's text."""
    pairs = re.findall(r"(?:^|,)\s*([A-Z])\s*=\s*(.*?)(?=,\s*[A-Z]\s*=|$)", text.strip())
    if text.strip() and not pairs:
        raise ValueError(f"cannot read --options {text!r}: write them as 'A=Yes.,B=No.'")
    if empty := [letter for letter, said in pairs if not said.strip()]:
        raise ValueError(f"--options {text!r}: option(s) {', '.join(empty)} have no text; write e.g. 'A=Yes.,B=No.'")
    if len(pairs) == 1:
        raise ValueError(f"--options {text!r}: one option is no choice; give two or more, e.g. 'A=Yes.,B=No.'")
    letters = [letter for letter, _ in pairs]
    twice = sorted({letter for letter in letters if letters.count(letter) > 1})
    if twice:  # a dict keeps the last one: the first would be dropped from the prompt without a word
        raise ValueError(f"--options {text!r}: repeats the letter(s) {', '.join(twice)}; give each option its own "
                         "letter, e.g. 'A=Yes.,B=No.'")
    return dict(pairs)


def given(parser, argv=None) -> dict:
    """The flags the user gave, as {field name: value}."""
    return vars(parser.parse_args(argv))


def make_folder(path, flag):
    """os.makedirs(path) for an output: a file in the way or a folder that cannot be written is one line naming
    `flag` (e.g. "--out runs/x") and the fix, not an errno."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a file; pass a folder")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a real write: os.access says yes to root, even in /proc
            pass
    except OSError as e:
        raise ValueError(f"{flag}: cannot write to {path} ({e.strerror or e}); pass a folder you can write") from None


def check_png_out(path):
    """--out of a PNG (plot.py, anomalyr1.py): a file name ending in .png, its folder made and writable (make_folder),
    checked before the work that draws it."""
    if os.path.isdir(path) or not path.lower().endswith(".png"):
        raise ValueError(f"--out {path}: pass a file name ending in .png")
    make_folder(os.path.dirname(os.path.abspath(path)), f"--out {path}")


def exit_with(line):
    """Print `line` on stderr and exit 2. Under torchrun every rank usually meets the same mistake (the same flags,
    files, folders): the first rank prints at once, the others only after a pause, by which time torchrun, which
    stops every rank at the first exit it sees (0.1 s), has stopped them. A mistake only one rank meets (its
    device, say) is still printed, by that rank, after the pause."""
    if os.environ.get("RANK", "0") != "0":  # RANK: set by torchrun, before any process group exists
        time.sleep(10)
    print(line, file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def user_errors(prog, errors=(ValueError, OSError)):
    """Inside this block a ValueError or OSError is the user's to fix (a path, a flag, a file's content): print
    `prog: error: <message>` and exit 2 (exit_with). The message must name the file or flag and the fix.
    A closed pipe (`eval.py --compare … | head`) is the reader having read enough, not an error: silent, exit 141
    (128 + SIGPIPE, what a shell reports for a command its pipe stopped)."""
    try:
        yield
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush of stdout must not fail too
        raise SystemExit(141)
    except errors as e:
        exit_with(f"{prog}: error: {e}")
