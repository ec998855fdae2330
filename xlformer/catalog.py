"""The bundled model specs (`templates/` in the source tree), found by name."""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from .spec import SpecError, did_you_mean

DEFAULT = "reverse"


def template_dir() -> Path:
    """Installed as the package `xlformer.templates`; in a bare checkout, ../templates."""
    try:
        from importlib.resources import files

        return Path(str(files("xlformer.templates")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "templates"


def names() -> list[str]:
    return sorted(p.stem for p in template_dir().glob("*.toml"))


def describe(name: str) -> str:
    with open(template_dir() / f"{name}.toml", "rb") as fh:
        return tomllib.load(fh).get("description", "")


def resolve(spec: str) -> Path:
    """A template name or a path to a spec file."""
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SpecError(f"spec file {spec} does not exist")
        return path
    if spec in names():
        return template_dir() / f"{spec}.toml"
    raise SpecError(f"'{spec}' is neither a spec file nor a template"
                    f"{did_you_mean(spec, names())}; templates: {', '.join(names())}")
