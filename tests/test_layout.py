"""The package's shape: roles in subpackages, imports running one way (ast, no imports run)."""

import ast
from pathlib import Path

import permanent

PACKAGE = Path(permanent.__file__).parent
ROLES = ("room", "model", "screen", "care", "remote", "measure")
TOP_SHARED = {"config", "events", "errors", "schema", "lifecycle"}   # what roles may use
# Roles meet only through the shared modules above; measure, like the app, may use any role.
FORBIDDEN = {
    "room": {"model", "screen", "care", "remote", "measure", "app", "cli", "render"},
    "model": {"room", "screen", "care", "remote", "measure", "app", "cli", "render"},
    "screen": {"room", "model", "care", "remote", "measure", "app", "cli", "render"},
    "care": {"room", "model", "screen", "remote", "measure", "app", "cli", "render"},
    "remote": {"room", "model", "screen", "care", "measure", "app", "cli", "render"},
    "measure": {"app", "cli"},
}


def imported_parts(path: Path) -> set[tuple[str, ...]]:
    """Each permanent-internal import of `path`, as the absolute module path under permanent."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if not (node.module or "").startswith("permanent"):
                    continue
                base = tuple(node.module.split(".")[1:])
            else:
                up = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                base = up + tuple((node.module or "").split(".") if node.module else ())
            if node.module is None:   # from . import voice
                found.update(base + (alias.name,) for alias in node.names)
            else:
                found.add(base)
        elif isinstance(node, ast.Import):
            found.update(tuple(a.name.split(".")[1:]) for a in node.names
                         if a.name.startswith("permanent."))
    return found


def test_the_top_level_shows_the_roles():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert subpackages == set(ROLES)
    for role in ROLES:
        doc = ast.get_docstring(ast.parse((PACKAGE / role / "__init__.py").read_text()))
        assert doc and "May import" in doc or role == "measure", role


def test_imports_run_one_way():
    crossings = []
    for role, forbidden in FORBIDDEN.items():
        for path in sorted((PACKAGE / role).rglob("*.py")):
            for target in imported_parts(path):
                if target and target[0] in forbidden:
                    crossings.append(f"{path.relative_to(PACKAGE)} imports {'.'.join(target)}")
    assert not crossings, "\n".join(crossings)


def test_roles_use_only_the_shared_top_level_modules():
    for role in ROLES:
        if role == "measure":
            continue
        for path in (PACKAGE / role).rglob("*.py"):
            for target in imported_parts(path):
                if len(target) == 1 and target[0] not in ROLES:
                    assert target[0] in TOP_SHARED, f"{path.relative_to(PACKAGE)} imports {target[0]}"


def test_the_shared_modules_import_no_role():
    """config, events, errors, schema and lifecycle are what the roles meet through: they
    may use each other, never a role nor the modules that tie the roles together."""
    crossings = []
    for name in sorted(TOP_SHARED):
        path = PACKAGE / f"{name}.py"
        for target in imported_parts(path):
            if target and target[0] not in TOP_SHARED:
                crossings.append(f"{name}.py imports {'.'.join(target)}")
    assert not crossings, "\n".join(crossings)


def test_the_walker_sees_a_crossing(tmp_path):
    """The check itself can fail: a room module importing the model is caught."""
    fake = PACKAGE / "room" / "_probe_crossing.py"
    fake.write_text("from ..model.entropy import entropy_bits\n")
    try:
        assert ("model", "entropy") in imported_parts(fake)
    finally:
        fake.unlink()
