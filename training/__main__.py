"""Command line of the training tools: ``python -m training <command> [options]`` from the repository root.

This module only wires the commands. Each command lives in its own module, which exposes
``add_arguments(parser)`` and ``run(args) -> int``; the module is imported only when its command is used, so one
command works even when another one's module (or an optional dependency it needs) is missing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

logger = logging.getLogger("training")  # __name__ is "__main__" under python -m

COMMANDS: dict[str, tuple[str, str]] = {
    "triplets": ("triplets", "build balanced (image, subject, object, relation) items with image-disjoint splits"),
    "invert": ("invert", "record attention maps of the items by dual inversion with a local diffusers model"),
    "train": ("train", "train a relation classifier on the recorded maps"),
    "export": ("export", "export a trained run to the final .safetensors classifier with full metadata"),
    "eval": ("evaluate", "evaluate a classifier per relation and step, or score boxes with the GenEval rule"),
    "toy": ("toy.cli", "the toy world: train its model and classifier from seeds on CPU, and benchmark steering"),
}
"""Command name -> (module in this package, one-line description)."""


class CommandUnavailable(RuntimeError):
    """A command's module is missing, cannot be imported, or lacks ``add_arguments``/``run``."""


def load_command(name: str) -> ModuleType:
    """Import the module of command ``name`` and check that it has ``add_arguments`` and ``run``.

    Raises:
        CommandUnavailable: the module file is missing, one of its imports fails, or it lacks the two functions.
    """
    module_name = COMMANDS[name][0]
    qualified = f"{__package__ or 'training'}.{module_name}"
    try:
        module = importlib.import_module(qualified)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            raise CommandUnavailable(
                f"the {name!r} command is not available: training/{module_name}.py is missing from this checkout."
            ) from None
        raise CommandUnavailable(
            f"the {name!r} command cannot start: training/{module_name}.py needs the module {exc.name!r}, which is "
            "not installed. Install the training extras: pip install -e '.[train]'."
        ) from exc
    missing = [f for f in ("add_arguments", "run") if not callable(getattr(module, f, None))]
    if missing:
        raise CommandUnavailable(
            f"the {name!r} command is not available: training/{module_name}.py does not define {', '.join(missing)}."
        )
    return module


def _add_global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging, and full tracebacks on errors"
    )
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="only warnings and errors")


def build_parser(command: str | None = None) -> tuple[argparse.ArgumentParser, ModuleType | None]:
    """Build the parser; only ``command``'s module is imported (to add its options).

    Returns:
        The parser and the loaded command module (``None`` when ``command`` is ``None`` or unknown).

    Raises:
        CommandUnavailable: ``command`` is known but its module cannot be used.
    """
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Learn-to-Steer training tools: data, attention recording, classifier training and evaluation.",
    )
    _add_global_flags(parser, argparse.SUPPRESS)
    parser.set_defaults(verbose=False, quiet=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_flags(common, argparse.SUPPRESS)  # also accepted after the command, without resetting them
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)
    module: ModuleType | None = None
    for name, (_, description) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=description, description=description, parents=[common])
        if name == command:
            module = load_command(name)
            module.add_arguments(sub_parser)
    return parser, module


def _command_in(argv: Sequence[str]) -> str | None:
    """The first positional argument (the command), skipping the global flags (which take no values)."""
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    try:
        parser, module = build_parser(command)
    except CommandUnavailable as exc:
        sys.stderr.write(f"python -m training: error: {exc}\n")
        return 2
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    assert module is not None, "parse_args accepted a command whose module was not loaded"
    try:
        return int(module.run(args))
    except (ValueError, FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        if args.verbose:
            raise
        logger.error("%s failed: %s", args.command, exc)
        return 1
    except KeyboardInterrupt:
        logger.error("%s interrupted", args.command)
        return 130


if __name__ == "__main__":
    sys.exit(main())
