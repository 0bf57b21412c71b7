"""Pieces of the shell scripts the torchrun and Slurm launchers write: the header, the environment, and
the plan (and model) files written into the run directory from here-documents, so one script carries
everything a node needs."""

from __future__ import annotations

import json
import re
import shlex

from .settings import PACKAGE_ROOT
from .spec import LaunchSpec

__all__ = ["shell_join", "comment", "exports", "job_files"]

_VAR = re.compile(r"\$\{?[A-Za-z_]\w*\}?(:(\$\{?[A-Za-z_]\w*\}?|\d+))?")


def shell_join(args: list[str]) -> str:
    """A command line with its arguments quoted, except shell variables ('$X', '${X}:29500') that the
    node expands."""
    return " ".join(a if _VAR.fullmatch(a) else shlex.quote(a) for a in args)


def comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in text.strip().splitlines())


def exports(spec: LaunchSpec, extra: dict[str, str] | None = None) -> str:
    """`export NAME=value` lines: this checkout on PYTHONPATH (for a source tree on a shared filesystem;
    harmless where paraplan is installed), then the spec's environment."""
    lines = [f'export PYTHONPATH={shlex.quote(str(PACKAGE_ROOT))}"${{PYTHONPATH:+:$PYTHONPATH}}"']
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted({**spec.env, **(extra or {})}.items())]
    return "\n".join(lines)


def job_files(spec: LaunchSpec) -> str:
    """Shell that writes plan.json (and model.json for a model given as a file) into the run directory,
    each atomically (temp file + rename: every node writes the same bytes)."""
    out = shlex.quote(spec.out_dir)
    files = {"plan.json": spec.plan.model_dump_json(indent=2)}
    if not isinstance(spec.model, str):
        files["model.json"] = spec.model.model_dump_json(indent=2)
    lines = [f"mkdir -p {out}",
             'write_file() {  # stdin -> $1, atomically',
             '  local tmp; tmp="$(mktemp "$1.XXXXXX")"; cat > "$tmp"; mv -f "$tmp" "$1"',
             "}"]
    for name, text in files.items():
        json.loads(text)  # the here-document is quoted ('EOF'): JSON passes through unchanged
        lines += [f"write_file {out}/{name} <<'PARAPLAN_EOF'", text, "PARAPLAN_EOF"]
    return "\n".join(lines)
