"""The ``sleuth`` command line: the parser and ``main``.

Each module in :data:`COMMAND_MODULES` has ``register(groups)``, adding its commands, and may list
``USER_ERRORS``: exception types whose message is shown to the user as is (exit status 2) instead
of a traceback. A command's options are defined in its own module only.

Every mistake a user can make on the command line ends the same way: one line
``sleuth: error: ...`` (or ``sleuth COMMAND: error: ...`` from the parser) on stderr and exit
status 2. That covers argparse's own errors, text arguments that are not valid UTF-8 (undecodable
bytes in argv reach Python as lone surrogates) and the named errors of the commands. Help shows
every option's default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from service.cli.options import InputError

COMMAND_MODULES = (
    "service.cli.search",
    "service.cli.serve",
    "service.cli.registry",
    "service.cli.bench",
    "service.cli.link",
    "service.cli.rerank",
    "service.cli.encoder",
    "service.cli.compare",
    "service.cli.online",
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless it has no default or already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


class SleuthArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``sleuth search: error: ...``), exit status 2.

    Sub-command parsers are created with the class of their parent, so every ``sleuth`` command
    parser is one of these.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class CommandGroups:
    """Hands out sub-command groups (``sleuth eval ...``, ``sleuth train ...``), creating them once."""

    def __init__(self, root: argparse._SubParsersAction) -> None:
        self.root = root
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def group(self, name: str, help_text: str) -> argparse._SubParsersAction:
        """The ``sleuth NAME ...`` group, created on first use."""
        if name not in self._groups:
            parser = self.root.add_parser(name, help=help_text, description=help_text)
            sub = parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
            self._groups[name] = sub
        return self._groups[name]


def build_parser() -> tuple[argparse.ArgumentParser, tuple[type[BaseException], ...]]:
    """The ``sleuth`` parser and the exception types every command reports as user errors."""
    parser = SleuthArgumentParser(
        prog="sleuth", description="Sleuth: hybrid search and entity linking, served over gRPC."
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SLEUTH_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: $SLEUTH_LOG_LEVEL, else INFO)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    root = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = CommandGroups(root)
    user_errors: list[type[BaseException]] = [InputError]
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(groups)
        user_errors.extend(getattr(module, "USER_ERRORS", ()))
    return parser, tuple(user_errors)


def iter_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser under it, depth first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                yield from iter_parsers(sub)


def _argument_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each argument's destination -> how the user spells it (``--top-k``, ``query``)."""
    names: dict[str, str] = {}
    for sub in iter_parsers(parser):
        for action in sub._actions:
            names.setdefault(action.dest, max(action.option_strings, key=len) if action.option_strings else action.dest)
    return names


def undecodable_argument(args: argparse.Namespace, names: dict[str, str]) -> str | None:
    """A one-line error for the first text argument holding bytes that were not valid UTF-8, or None.

    Python decodes argv with ``surrogateescape``: a byte it cannot decode (``sleuth search $'\\xff'``)
    becomes a lone surrogate (U+DCFF), which no encoder, tokenizer or output stream can take.
    Paths are exempt: the file system accepts any bytes and ``pathlib`` round-trips them.
    """
    for dest, value in vars(args).items():
        texts = value if isinstance(value, list | tuple) else [value]
        for text in texts:
            if not isinstance(text, str):
                continue
            bad = next((ch for ch in text if "\udc80" <= ch <= "\udcff"), None)
            if bad is not None:
                return (
                    f"argument {names.get(dest, dest)}: not valid UTF-8 text (byte 0x{ord(bad) - 0xDC00:02x}); "
                    "check the terminal's or the script's encoding"
                )
    return None


def one_line(exc: BaseException) -> str:
    """An error's message on one line (a user error is one ``sleuth: error:`` line, whatever raised it)."""
    return re.sub(r"\s*\n\s*", " ", str(exc)).strip() or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sleuth`` with ``argv`` (default: the process arguments); the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser, user_errors = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    problem = undecodable_argument(args, _argument_names(parser))
    if problem is not None:
        print(f"sleuth: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("sentence_transformers", "httpx", "bm25s", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except user_errors as exc:
        print(f"sleuth: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"sleuth: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
