"""Generate docs/reference/configuration.md from the pydantic models of pipeline.yaml and cluster.yaml.

    python scripts/gen_config_reference.py           # write the file
    python scripts/gen_config_reference.py --check   # exit 1 when the file on disk differs (drift)

pipeline.yaml: ``mirpipe.pipeline.config.config_model()`` (one section per registered stage, plus
``plugins`` and ``run``), with the sections validated by registries rather than by that model:
``features.<kind>`` (each feature kind's ``Params``), ``train.models.<task>`` (each task's ``Params``),
``train.overrides.<task>`` and ``evaluate.decoding.<task>`` (each task's ``DecodeParams``).
cluster.yaml: ``mirpipe.pipeline.config.ClusterConfig``, one table per cluster type.
The output depends only on the registered models: registries are listed sorted by name.
"""

from __future__ import annotations

import argparse
import difflib
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "reference" / "configuration.md"

_CONSTRAINTS = {
    "ge": "≥",
    "gt": ">",
    "le": "≤",
    "lt": "<",
    "min_length": "min length",
    "max_length": "max length",
}


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def type_name(t: Any) -> str:
    """A readable type: ``int | None``, ``"a" | "b"``, ``list[str]``, ``dict[str, float]``, a model's name."""
    if t is type(None):
        return "null"
    if t is Any:
        return "any"
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (list, tuple, set, frozenset, dict):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if inner else origin.__name__
    if isinstance(t, type):
        if issubclass(t, Path):
            return "path"
        return t.__name__
    return str(t).replace("typing.", "")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_text(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if _is_model(type(value)):
        return "(section)"
    return "`" + json.dumps(_plain(value), ensure_ascii=False) + "`"


def constraints(field) -> str:
    out = []
    for meta in field.metadata:
        for attr, sign in _CONSTRAINTS.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return ", ".join(out)


def _cell(text: str) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;") if "`" not in text else text


def _models_in(t: Any) -> list[type[BaseModel]]:
    """The models a field holds directly (``M``, ``M | None``)."""
    union = typing.get_origin(t) in (typing.Union, types.UnionType)
    return [a for a in (t, *(typing.get_args(t) if union else ())) if _is_model(a)]


def _dict_values(t: Any) -> Any:
    """For ``dict[str, M]`` (or ``dict[str, M] | None``) the value type M, else None."""
    for a in (t, *typing.get_args(t)):
        if typing.get_origin(a) is dict:
            args = typing.get_args(a)
            return args[1] if len(args) == 2 else None
    return None


def rows(model: type[BaseModel], prefix: str, placeholders: dict[str, str]) -> list[tuple[str, str, str, str, str]]:
    """(key path, type, default, constraints, description) of every field, nested models walked."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        doc = field.description or ""
        nested = _models_in(field.annotation)
        if nested and not doc:
            doc = (nested[0].__doc__ or "").strip().split("\n\n")[0]
        out.append(
            (
                path,
                type_name(field.annotation),
                default_text(field),
                constraints(field),
                doc,
            )
        )
        for sub in nested:
            out.extend(rows(sub, f"{path}.", placeholders))
        values = _dict_values(field.annotation)
        if _is_model(values):
            entry = f"{path}.<{placeholders.get(path, 'name')}>"
            first = (values.__doc__ or "").strip().split("\n\n")[0]
            out.append((entry, values.__name__, "(section)", "", first))
            out.extend(rows(values, f"{entry}.", placeholders))
    return out


def _table(lines: list[str], body: list[tuple[str, str, str, str, str]]) -> None:
    lines.append("| key | type | default | constraints | description |")
    lines.append("|---|---|---|---|---|")
    for path, typ, default, cons, doc in body:
        lines.append(f"| `{path}` | {_cell(typ)} | {_cell(default)} | {_cell(cons)} | {_cell(doc)} |")
    lines.append("")


def pipeline_sections() -> list[tuple[str, str, list]]:
    """(title, intro, rows) per top-level section of pipeline.yaml, registry-validated parts included."""
    from mirpipe.models.task import TASKS
    from mirpipe.pipeline.config import config_model
    from mirpipe.storage.feature_kinds import FEATURE_KINDS

    placeholders = {
        "ingest.vocabularies": "task",
        "ingest.annotation_choice_by_namespace": "namespace",
    }
    model = config_model()
    sections = []
    for name, field in model.model_fields.items():
        body = rows(model, "", placeholders)
        body = [r for r in body if r[0] == name or r[0].startswith(f"{name}.")]
        intro = field.description or ""
        nested = _models_in(field.annotation)
        if nested and nested[0].__doc__:
            intro = " ".join(nested[0].__doc__.split())
            intro = f"{intro} (runs only when given)" if "runs only when given" in (field.description or "") else intro
        # per-name sub-sections: (prefix, the model of each name or None, what it is)
        subsections: list[tuple[str, dict[str, Any], str]] = []
        if name == "features":
            kinds = {kind: FEATURE_KINDS.get(kind).Params for kind in FEATURE_KINDS.names()}
            subsections.append(("features", kinds, "feature kind `{}`"))
        if name == "train":
            body.append(("train.overrides.<task>", "dict[str, any]", "", "", "the settings of one task that differ"))
            body.append(
                (
                    "train.overrides.<task>.<key>",
                    "any",
                    "",
                    "",
                    "a train setting above (patch_frames, batch_size, lr, lr_schedule, sampling, ...) for one task only",
                )
            )
            networks = {t: getattr(TASKS.get(t).network, "Params", None) for t in TASKS.names()}  # None: target-only
            subsections.append(("train.models", networks, "the `{}` network"))
        if name == "evaluate":
            decoders = {t: getattr(TASKS.get(t).decoder, "DecodeParams", None) for t in TASKS.names()}
            subsections.append(("evaluate.decoding", decoders, "how `{}` decodes"))
        for prefix, models, what in subsections:
            for key in sorted(models):
                params = models[key]
                if params is None or not params.model_fields:
                    continue
                doc = (params.__doc__ or "").strip().split("\n\n")[0] if prefix == "features" else ""
                text = what.format(key) + (f": {doc}" if doc else "")
                body.append((f"{prefix}.{key}", params.__name__, "(section)", "", text))
                body.extend(rows(params, f"{prefix}.{key}.", placeholders))
        sections.append((name, intro, body))
    return sections


def cluster_sections() -> list[tuple[str, str, list]]:
    from mirpipe.pipeline.config import ClusterConfig

    union = typing.get_args(ClusterConfig)[0]
    out = []
    for model in typing.get_args(union):
        kinds = typing.get_args(model.model_fields["type"].annotation)
        title = " / ".join(f"`type: {k}`" for k in kinds)
        doc = " ".join((model.__doc__ or "").split())
        out.append((title, doc, rows(model, "cluster.", {})))
    return out


def pools_section() -> tuple[str, str, list]:
    """The top-level keys of a cluster.yaml with named pools (each pool is one of the types above)."""
    from mirpipe.pipeline.config import PooledCluster

    doc = " ".join((PooledCluster.__doc__ or "").split())
    body = [
        (
            name,
            "cluster spec" if name == "cluster" else type_name(f.annotation),
            default_text(f),
            constraints(f),
            f.description or "",
        )
        for name, f in PooledCluster.model_fields.items()
    ]
    body[0] = ("cluster", "cluster spec", "`{type: local}`", *body[0][3:])
    body[1] = ("pools", "dict[str, cluster spec]", *body[1][2:])
    return "Named pools (`pools:`, `stages:`)", doc + " See [clusters.md](clusters.md#pools).", body


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- GENERATED by scripts/gen_config_reference.py from the pydantic models; do not edit by hand.",
        "     Regenerate: python scripts/gen_config_reference.py  (tests/test_docs.py checks it is current) -->",
        "",
        "Both files are validated before any work is submitted: an unknown key or a bad value fails",
        "naming the file and the field. `mirpipe run --workdir DIR` alone reuses the configuration",
        "the workdir recorded (`DIR/mirpipe.yaml`). A key path `a.<task>.b` stands for one entry per",
        "task (or namespace, ...) name. Commented examples: [pipeline.yaml](../../pipeline.yaml),",
        "[cluster.yaml](../../cluster.yaml), [examples/](../../examples/).",
        "",
        "## pipeline.yaml",
        "",
        "One section per registered stage (`mirpipe stages` lists them), plus `plugins` and `run`.",
        "An optional stage (`synthesize`, the demo corpus; registered when the demo is installed)",
        "runs only when its section is given. `features.<kind>`, `train.models.<task>` and",
        "`evaluate.decoding.<task>` are validated by the feature kind's or the task's own model;",
        "plugins add their own sections and keys.",
        "",
    ]
    for name, intro, body in pipeline_sections():
        lines += [f"### `{name}`", ""]
        if intro:
            lines += [_cell(intro), ""]
        _table(lines, body)
    lines += [
        "## cluster.yaml",
        "",
        "The keys sit under `cluster:` (a file without it is read as the `cluster:` mapping itself).",
        "`type` picks the model; keys may also be spelled with hyphens (`job-extra-directives`, as in",
        "dask-jobqueue's `jobqueue.yaml`). For the batch systems only the keys the file sets are passed",
        "to dask-jobqueue; the site's `jobqueue.<type>.*` configuration supplies the rest.",
        "See [clusters.md](clusters.md).",
        "",
    ]
    for title, intro, body in cluster_sections():
        lines += [f"### {title}", ""]
        if intro:
            lines += [intro, ""]
        _table(lines, body)
    title, intro, body = pools_section()
    lines += [f"### {title}", "", intro, ""]
    _table(lines, body)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when the file on disk is not what would be generated",
    )
    parser.add_argument("--out", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(),
                text.splitlines(),
                str(args.out),
                "generated",
                lineterm="",
                n=1,
            )
            print("\n".join(list(diff)[:60]), file=sys.stderr)
            print(
                f"{args.out} is out of date: run python scripts/gen_config_reference.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
