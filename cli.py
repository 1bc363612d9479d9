"""Command-line plumbing shared by every script: a config dataclass becomes flags, and a mistake the user can fix
becomes one line on stderr and exit status 2, never a traceback.

    @dataclasses.dataclass
    class Config:
        group_size: int = cli.option(8, "G, completions sampled per prompt")

    parser = cli.parser("what the script does")
    cli.add_flags(parser, Config)                 # --group-size GROUP_SIZE, booleans as --flag/--no-flag
    cfg = Config(**cli.given(parser, argv))       # only the flags given: layer them over saved settings
"""
import argparse
import contextlib
import dataclasses
import sys
import typing


def option(default, help, choices=None):
    """A config field that is also a flag: its help text and, optionally, the values it may take."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def parser(description):
    """An ArgumentParser whose errors are one line (`prog: error: ... (see --help)`, exit 2), not the usage block."""
    p = argparse.ArgumentParser(description=description)

    def error(message):
        print(f"{p.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)
    p.error = error
    return p


def add_flags(parser, config_cls, shown_default=None):
    """One flag per field of `config_cls`: --field-name, typed by the field's annotation. `shown_default(field)`
    is the default the help text names (e.g. one that depends on the model); by default the field's own.
    Flags left out do not appear in the parsed namespace, so `given` returns only what the user said."""
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = shown_default(f) if shown_default else f.default
        help = f.metadata.get("help", "") + (f" (default: {default})" if default is not None else "")
        if f.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help)
            continue
        kind = ([t for t in typing.get_args(f.type) if t is not type(None)] or [f.type])[0]
        parser.add_argument(flag, type=kind, metavar=f.name.upper(), choices=f.metadata.get("choices"),
                            default=argparse.SUPPRESS, help=help)


def given(parser, argv=None) -> dict:
    """The flags the user gave, as {field name: value}."""
    return vars(parser.parse_args(argv))


@contextlib.contextmanager
def user_errors(prog, errors=(ValueError, OSError)):
    """Inside this block a ValueError or OSError is the user's to fix (a path, a flag, a file's content): print
    `prog: error: <message>` and exit 2. The message must name the file or flag and the fix."""
    try:
        yield
    except errors as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
