"""The documentation stays true: commands it shows exist, links resolve, the configuration
reference is generated from the current models and covers every key of the shipped YAML files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "configuration.md"
MAX_README_LINES = 150


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _code(text: str) -> list[str]:
    """Fenced code blocks (whole) and inline code spans of a Markdown text."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    return fenced + re.findall(r"`([^`\n]+)`", rest)


def _shown(pattern: str) -> set[tuple[str, str]]:
    """(page, match) for every match of `pattern` in the code of the pages."""
    found = set()
    for page in _pages():
        for block in _code(page.read_text()):
            for m in re.finditer(pattern, block):
                found.add((page.relative_to(ROOT).as_posix(), m.group(1).strip()))
    return found


# `mirpipe CMD [SUB]` as a word (not mirpipe.cluster(...), not the mirpipe_import sandbox key)
MIRPIPE_CMD = r"(?:^|[\s/(`])mirpipe((?:[ \t]+[a-z][a-z0-9-]*){1,2})"


def _cli_commands() -> list[tuple[str, tuple[str, ...]]]:
    from mirpipe.pipeline.cli import main

    out = set()
    for page, words in _shown(MIRPIPE_CMD):
        first, *rest = words.split()
        args = (first,)
        group = main.commands.get(first)
        if group is not None and hasattr(group, "commands") and rest:
            args = (first, rest[0])
        out.add((page, args))
    return sorted(out)


def test_docs_show_mirpipe_commands():
    assert _cli_commands(), "no mirpipe command found in README.md or docs/"


@pytest.mark.parametrize(
    ("page", "args"),
    _cli_commands(),
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_shown_mirpipe_command_exists(page, args):
    from mirpipe.pipeline.cli import main

    result = CliRunner().invoke(main, [*args, "--help"])
    assert result.exit_code == 0, f"{page} shows `mirpipe {' '.join(args)}`, which does not exist:\n{result.output}"


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))


def test_shown_make_targets_exist():
    targets = _make_targets()
    shown = _shown(r"(?:^|[\s`&;(])make[ \t]+([a-z][a-z0-9_-]*)")
    assert shown, "no `make` target shown"
    missing = sorted(f"{page}: make {t}" for page, t in shown if t not in targets)
    assert not missing, f"make targets shown but not in the Makefile: {missing}"
    assert {"demo", "test"} <= {t for _, t in _shown(r"(?:^|[\s`])make[ \t]+([a-z]+)") if _ == "README.md"}


def test_mentioned_scripts_exist():
    mentioned = set()
    for page in _pages():
        for m in re.finditer(
            r"(?<![\w/.-])((?:benchmarks|scripts|examples)/[\w./-]*\w)",
            page.read_text(),
        ):
            mentioned.add((page.relative_to(ROOT).as_posix(), m.group(1)))
    assert mentioned
    missing = sorted(f"{page}: {path}" for page, path in mentioned if not (ROOT / path).exists())
    assert not missing, f"paths mentioned but missing: {missing}"


def test_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail into docs/"
    )


def _links(page: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.DOTALL | re.MULTILINE)
    return re.findall(r"\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = (page.parent / link.split("#")[0]).resolve()
        if not target.exists():
            broken.append(link)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_reference", ROOT / "scripts" / "gen_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    """docs/reference/cli.md's `--help` part is what the installed commands print."""
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "scripts" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = module.TARGET.read_text()
    assert module.render(current) == current, "docs/reference/cli.md is out of date: run python scripts/gen_cli_reference.py"


def test_configuration_reference_is_current():
    from mirpipe.stages import STAGES

    if "synthesize" not in STAGES.names():
        pytest.skip("the demo (synthesize stage) is not installed: its section of the reference cannot be generated here")
    assert REFERENCE.read_text() == _generator().render(), (
        "docs/reference/configuration.md is out of date: run python scripts/gen_config_reference.py"
    )


def _reference_rows(heading: str) -> list[tuple[str, str]]:
    """(key pattern, type) of every table row under the `## heading` section of the reference."""
    text = REFERENCE.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| ([^|]*(?:\\\|[^|]*)*) \|", section, flags=re.MULTILINE)


def _yaml_keys(data, prefix: str = "") -> list[str]:
    keys = []
    for key, value in (data or {}).items():
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, dict):
            keys.extend(_yaml_keys(value, f"{path}."))
    return keys


def _uncovered(keys: list[str], rows: list[tuple[str, str]]) -> list[str]:
    patterns = []
    for key, typ in rows:
        regex = re.escape(key).replace(re.escape("<"), "<").replace(re.escape(">"), ">")
        regex = re.sub(r"<[^>]+>", r"[^.]+", regex)
        # a mapping the reference does not break down (dict[str, float], extra, ...) takes any key below it
        open_mapping = typ.startswith("dict[") and not any(k.startswith(f"{key}.") for k, _ in rows)
        patterns.append(re.compile(regex + (r"(\..+)?" if open_mapping else "")))
    return [k for k in keys if not any(p.fullmatch(k) for p in patterns)]


def test_reference_covers_pipeline_yaml():
    keys = _yaml_keys(yaml.safe_load((ROOT / "pipeline.yaml").read_text()))
    assert "train.models.pitch.channels" in keys
    missing = _uncovered(keys, _reference_rows("pipeline.yaml"))
    assert not missing, f"pipeline.yaml keys missing from docs/reference/configuration.md: {missing}"


def test_reference_covers_cluster_yaml():
    keys = _yaml_keys(yaml.safe_load((ROOT / "cluster.yaml").read_text())["cluster"], "cluster.")
    assert "cluster.type" in keys
    missing = _uncovered(keys, _reference_rows("cluster.yaml"))
    assert not missing, f"cluster.yaml keys missing from docs/reference/configuration.md: {missing}"


def test_reference_coverage_check_fails_on_an_unknown_key():
    rows = _reference_rows("pipeline.yaml")
    assert _uncovered(["train.no_such_key", "features.cqt.no_such_key"], rows) == [
        "train.no_such_key",
        "features.cqt.no_such_key",
    ]
    assert _uncovered(["ingest.split_fractions.train", "train.overrides.pitch.lr"], rows) == []
