"""Argument plumbing of the `paraplan` command: a parser whose errors are one line (no usage block,
no exit from inside argparse), typed flags that refuse what makes no sense at parse time (0 GPUs, a
negative batch, an output that is a folder), and the plan-knob flags whose defaults never overwrite a
`--plan FILE`."""

from __future__ import annotations

import argparse
import math
from typing import Any, NoReturn

from costmodel.atomic import check_output_path
from costmodel.specs.limits import shown

__all__ = ["CliUsageError", "Parser", "positive_int", "nonnegative_int", "positive_float", "fraction",
           "output_file", "PLAN_DEFAULTS", "default_help"]

_MAX_MESSAGE = 300


class CliUsageError(ValueError):
    """A command line argparse cannot parse: `main` prints it as one line and exits 2."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser (and the class of its subcommand parsers) that raises `CliUsageError`
    instead of printing the usage block and exiting, and cuts messages quoting huge inputs."""

    def error(self, message: str) -> NoReturn:
        if len(message) > _MAX_MESSAGE:
            message = message[:_MAX_MESSAGE - 3] + "..."
        command = self.prog.removeprefix("paraplan").strip()
        hint = f" (see paraplan {command + ' ' if command else ''}--help)"
        raise CliUsageError(message + hint)


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {shown(text)}") from None


def positive_int(text: str) -> int:
    """A whole number >= 1 (GPUs, degrees, batch sizes, lengths, counts)."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """A whole number >= 0 (e.g. a seed, or a count where 0 means 'skip')."""
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {value}")
    return value


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {shown(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {shown(text)}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds)."""
    value = _real(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {shown(text)}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = _real(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {shown(text)}")
    return value


def output_file(text: str) -> str:
    """A path a file can be written to (not a folder, not under a file, a name the file system takes),
    checked before any work is done."""
    try:
        return str(check_output_path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


PLAN_DEFAULTS: dict[str, Any] = {"tp": 1, "pp": 1, "cp": 1, "ep": 1, "micro_batch": 1, "virtual_stages": 1, "zero": 0,
                                 "recompute": "none", "sequence_parallel": False}
"""What `estimate` uses for a knob that neither the command line nor `--plan FILE` sets (the
ParallelPlan defaults; dp fills the cluster, the schedule is 1f1b, or interleaved-1f1b with
virtual stages)."""


def default_help(name: str, text: str = "") -> str:
    """Help text naming the default a knob gets when neither the flag nor a plan file sets it."""
    value = PLAN_DEFAULTS.get(name)
    shown_value = {False: "off", True: "on"}.get(value, value) if isinstance(value, bool) else value
    return f"{text + '; ' if text else ''}default {shown_value}, or the --plan file's"

