"""Regenerate the "Each command's `--help`" part of docs/reference/cli.md from the click commands.

    python scripts/gen_cli_reference.py           # rewrite that part of the file
    python scripts/gen_cli_reference.py --check   # exit 1 when the file on disk differs (drift)

Everything above the heading is written by hand (the synopsis, defaults, exit codes); everything
below it is each command's and sub-command's ``--help``, as the installed ``mirpipe`` prints it
at a fixed width of 100 columns, in the order the command groups list them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "reference" / "cli.md"
HEADING = "## Each command's `--help`"
WIDTH = 100


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path below ``group`` (sub-commands of a group after it), in listing order."""
    ctx = click.Context(group)
    out: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += commands(command, (*prefix, name))
    return out


def render_help() -> str:
    """The generated part: the heading, a line on where it comes from, one block per command."""
    from mirpipe.pipeline.cli import main as cli

    runner = CliRunner()
    lines = [HEADING, "", "Generated from each command's `--help` by `scripts/gen_cli_reference.py`.", ""]
    for path in [(), *commands(cli)]:  # the command itself first, then each (sub-)command
        result = runner.invoke(cli, [*path, "--help"], prog_name="mirpipe", terminal_width=WIDTH)
        if result.exit_code != 0:
            raise SystemExit(f"mirpipe {' '.join(path)} --help exited {result.exit_code}: {result.output}")
        lines += [f"### `{' '.join(('mirpipe', *path))}`", "", "```", result.output.rstrip(), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render(current: str) -> str:
    """``current`` with everything from the heading on replaced by the generated part."""
    head = current.split(HEADING, 1)[0] if HEADING in current else current.rstrip("\n") + "\n\n"
    return head + render_help()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file on disk is not what would be generated")
    args = parser.parse_args(argv)
    current = TARGET.read_text()
    text = render(current)
    if args.check:
        if text != current:
            print(f"{TARGET} is out of date: run python scripts/gen_cli_reference.py", file=sys.stderr)
            return 1
        print(f"{TARGET} is current")
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
