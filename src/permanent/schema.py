"""Typed YAML: build frozen dataclasses from a YAML file and say exactly where it is wrong.

`config.yaml` and the sound presets share this. Each dataclass field may carry bounds in
its metadata (`ge`, `gt`, `le`, `lt`); a field with `metadata={"yaml": False}` is not
read from the file. Errors name the file, the line and the dotted key path, and say what
would be accepted, because the person reading them is standing at a gallery machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError

# A settings file is a few kilobytes. Past these it is the wrong file, or anchors and
# aliases that multiply (a "billion laughs"): refused before anything is built from it.
MAX_FILE_BYTES = 1 << 20
MAX_VALUES = 20_000       # nodes visited, each alias counted every time it is reached
MAX_DEPTH = 32

# The tags YAML's safe loader gives plain values; any other is written in the file.
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in
               ("str", "int", "float", "bool", "null", "map", "seq")}


def load_yaml(cls: type, text: str, source: str, lines: dict | None = None) -> Any:
    """Parse `text` (named `source` in messages) into an instance of dataclass `cls`.

    If `lines` is given it is filled with {dotted key path: line number}, so checks made
    later (does this preset exist?) can still point at the line to fix. Whatever is wrong
    with the text, the error is a ConfigError that names the line.
    """
    try:
        loader = yaml.SafeLoader(text)   # it checks every character first
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}, line {mark.line + 1}" if mark else source
        fix = "Indent with spaces: YAML does not allow tabs." if "'\\t'" in str(e.problem) \
            else "Check the indentation and the colon after each key."
        raise ConfigError(f"{where}: this is not valid YAML ({e.problem}). {fix}") from None
    except yaml.reader.ReaderError as e:   # a character YAML does not allow (a NUL, a control)
        line = text.count("\n", 0, e.position) + 1
        raise ConfigError(f"{source}, line {line}: the character #x{e.character:04x} cannot "
                          "be in a YAML file. Delete it (the file may be damaged: compare it "
                          "with the project's config.yaml).") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: this is not valid YAML ({e}).") from None
    try:
        if root is None:  # an empty file means "all defaults"
            return cls()
        _check_size(root, source)
        if lines is not None:
            _record_lines(root, "", lines)
        return _build(cls, root, "", source, loader)
    finally:
        loader.dispose()


def _check_size(root: yaml.Node, source: str) -> None:
    """Refuse a node graph too deep or too large to be settings, naming where it grew."""
    visited = 0
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        visited += 1
        if depth > MAX_DEPTH or visited > MAX_VALUES:
            what = f"nests values more than {MAX_DEPTH} deep" if depth > MAX_DEPTH else \
                f"holds more than {MAX_VALUES} values"
            raise ConfigError(f"{source}, line {line_of(node)}: the file {what}, "
                              "through anchors and aliases (& and *) or nesting. Settings "
                              "need neither: write each value out.")
        if isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)


def _record_lines(node, path, lines):
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[key_path] = line_of(key_node)
            _record_lines(value_node, key_path, lines)


def load_yaml_file(cls: type, path: Path, lines: dict | None = None) -> Any:
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a settings file. Pass the file "
                              "itself with --config, e.g. config.yaml.")
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file. Pass an existing file with --config, "
                          "or copy config.yaml from the project.") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e}). Check that it exists "
                          "and that this user may read it.") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: is larger than {MAX_FILE_BYTES // 1024} KiB, which no "
                          "settings file is. Is this the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}, line {line}: this is not UTF-8 text (byte "
                          f"0x{data[e.start]:02x}). Save the file as UTF-8, or retype "
                          "that line.") from None
    return load_yaml(cls, text, str(path), lines)


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Fail(Exception):
    def __init__(self, node: yaml.Node, message: str):
        self.node, self.message = node, message


def _fail(node, path, source, message) -> ConfigError:
    key = path or "(top level)"
    return ConfigError(f"{source}, line {line_of(node)}: {key}: {message}")


def _build(tp, node, path, source, loader):
    try:
        if node.tag not in _PLAIN_TAGS:
            raise _Fail(node, f"the tag {node.tag!r} is not allowed in settings; remove it "
                        "and write the value plainly.")
        return _value(tp, node, path, source, loader)
    except _Fail as f:
        raise _fail(f.node, path, source, f.message) from None


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "a whole number"
    if tp is float:
        return "a number"
    if tp is str:
        return "a text"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0])}s"
    if origin is tuple:
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if dataclasses.is_dataclass(tp):
        return "a section of keys"
    return str(tp)


def _got(node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a section of keys"
    if isinstance(node, yaml.SequenceNode):
        count = len(node.value)
        return "an empty list" if not count else f"a list of {count} value{'s' * (count > 1)}"
    return repr(node.value) if node.tag != "tag:yaml.org,2002:null" else "null (empty)"


def _value(tp, node, path, source, loader):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _section(tp, node, path, source, loader)
    if origin in (Union, types.UnionType):
        if type(None) in args and node.tag == "tag:yaml.org,2002:null":
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _value(option, node, path, source, loader)
            except (_Fail, ConfigError):
                continue
        raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
    if origin is list:
        if not isinstance(node, yaml.SequenceNode):
            raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
        return [_build(args[0], item, f"{path}[{i}]", source, loader)
                for i, item in enumerate(node.value)]
    if origin is tuple:
        if not isinstance(node, yaml.SequenceNode) or len(node.value) != len(args):
            raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
        return tuple(_build(a, item, f"{path}[{i}]", source, loader)
                     for i, (a, item) in enumerate(zip(args, node.value)))
    if not isinstance(node, yaml.ScalarNode):
        raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
    try:
        value = loader.construct_object(node)
    except Exception as e:   # noqa: BLE001 - however PyYAML fails, the value is unreadable
        # The plain tags too can fail: !!int abc, !!bool 4.5, an integer too long to convert.
        raise _Fail(node, f"{_got(node)} cannot be read as a value ({_reason(e)}). "
                    f"Write {_describe(tp)}.")
    if origin is Literal:
        if value not in args:
            raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise _Fail(node, f"{_got(node)} is too large a number. Write {_describe(tp)}.") \
                from None
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise _Fail(node, f"expected {_describe(tp)}, got {_got(node)}.")
    return value


def _reason(e: Exception) -> str:
    text = getattr(e, "problem", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:120]


def _section(cls, node, path, source, loader):
    if not isinstance(node, yaml.MappingNode):
        raise _Fail(node, f"expected a section of keys, got {_got(node)}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("yaml", True)}
    values: dict[str, Any] = {}
    key_nodes: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
            raise _fail(key_node, path, source, "a key must be a plain name, such as "
                        f"{next(iter(fields))}: (no tag, list or section before the colon).")
        key = key_node.value
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            fix = f"did you mean '{hint[0]}'?" if hint else \
                f"the keys here are: {', '.join(fields)}."
            raise _fail(key_node, key_path, source, f"unknown key; {fix}")
        if key in values:
            raise _fail(key_node, key_path, source, "this key appears twice; keep one.")
        value = _build(hints[key], value_node, key_path, source, loader)
        _check_bounds(fields[key], value, value_node, key_path, source)
        values[key], key_nodes[key] = value, key_node
    instance = cls(**values)
    check = getattr(instance, "validate", None)
    if check is not None:
        problem = check()
        if problem is not None:
            key, message = problem
            anchor = key_nodes.get(key, node)
            raise _fail(anchor, f"{path}.{key}" if path else key, source, message)
    return instance


def _check_bounds(field, value, node, path, source):
    meta = field.metadata
    if value is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if value != value:   # NaN: no bound holds, and none fails either
        raise _fail(node, path, source, f"must be a number (got {value}).{_range_hint(meta)}")
    checks = [("ge", "ge" not in meta or value >= meta["ge"], "at least"),
              ("gt", "gt" not in meta or value > meta["gt"], "greater than"),
              ("le", "le" not in meta or value <= meta["le"], "at most"),
              ("lt", "lt" not in meta or value < meta["lt"], "less than")]
    for name, ok, words in checks:
        if not ok:
            raise _fail(node, path, source,
                        f"must be {words} {meta[name]} (got {value}).{_range_hint(meta)}")


def _range_hint(meta) -> str:
    low = meta.get("ge", meta.get("gt"))
    high = meta.get("le", meta.get("lt"))
    if low is not None and high is not None:
        return f" Use a value from {low} to {high}."
    return ""


def bounded(default, *, ge=None, gt=None, le=None, lt=None, **extra):
    """A dataclass field with a default and numeric bounds checked at load time."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt).items() if v is not None}
    meta.update(extra)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
