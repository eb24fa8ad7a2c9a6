"""YAML configuration read safely and strictly, then validated by pydantic; a bad file fails with the file
name, the key path and what is allowed.

Strict means:

- ``yaml.safe_load``'s constructors only (no Python objects), and a key given twice in one mapping is an
  error (PyYAML would keep the last).
- Aliases (``*name``, including merge keys ``<<: *name``) are refused: no configuration here needs them,
  and an alias bomb ("billion laughs") expands a few hundred bytes into billions of values. An anchor
  alone (``&name``) is harmless and allowed.
- Booleans are YAML 1.2's: ``true``/``false`` (any case style PyYAML knows: True, TRUE). The YAML 1.1
  words ``yes``/``no``/``on``/``off``/``y``/``n`` are plain strings, so ``gate: off`` is an error for a
  boolean key ("expected true or false") instead of quietly meaning false, and ``country: NO`` stays Norway.
- No type coercion: the model is validated in pydantic's strict mode, so ``min_support: true`` is not 1,
  ``gate: 'off'`` is not false and ``days: '7'`` is not 7. (Floats accept integers: ``rate: 1`` is 1.0.)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_SHOWN_CHARS = 120  # a value echoed in an error message is cut to this many characters
YAML11_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n"}


class ConfigError(ValueError):
    """A configuration file is missing, not YAML, or does not validate."""


class EventsLocationError(ConfigError):
    """The event logs' location cannot serve: an unknown protocol, a missing fsspec implementation, a bucket that
    does not exist, a writer pointed at a URL. The CLI says it and exits 2."""


class EventsUnreachable(EventsLocationError, ConnectionError):
    """The event logs' storage could not be read: the endpoint did not answer, the credentials were refused, the
    filesystem refused an option it was given (release.core.io.list_partitions says which)."""


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """repr(value) for an error message, cut to ``limit`` characters (a 200 KB value must not become a
    200 KB message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class StrictLoader(yaml.SafeLoader):
    """yaml.safe_load, except: a duplicate key is an error, aliases are refused, and only YAML 1.2's
    true/false are booleans (see the module docstring)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"found the alias *{event.anchor}; aliases (and merge keys '<<: *{event.anchor}') are "
                "not allowed in configuration files: write the value out where it is used", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain value (text or a number); got a {type(key).__name__}",
                    key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# YAML 1.2 booleans only: copy SafeLoader's implicit resolvers and replace its YAML 1.1 bool pattern
StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))

_UniqueKeyLoader = StrictLoader  # the name this loader had before it was strict in every way


def load_yaml(text: str, source: str | Path = "<string>"):
    """The YAML document in ``text``, read strictly (see the module docstring). Raises ConfigError naming
    ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from e
    except RecursionError as e:
        raise ConfigError(f"{source}: nested too deeply to be a configuration file.") from e


def _hint(err: dict) -> str:
    value = err.get("input")
    if err.get("type") == "bool_type" and isinstance(value, str) and value.lower() in YAML11_BOOL_WORDS:
        return "; write true or false (YAML 1.1's yes/no/on/off are plain strings here)"
    return ""


def read_config(path: str | Path) -> str:
    """The text of the configuration file at ``path``, or a ConfigError saying why it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such configuration file.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}).") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}.") from e


def load_yaml_model(path: str | Path, model: type[M], text: str | None = None) -> M:
    """The file at ``path`` read strictly and validated by ``model`` in pydantic's strict mode. ``text``: the
    file's text as already read (``read_config``), so that what is validated is what the caller keeps."""
    path = Path(path)
    if text is None:
        text = read_config(path)
    raw = load_yaml(text, path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}.")
    try:
        return model.model_validate(raw, strict=True)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"{path}: {loc}: {err['msg']} (got {shown(err.get('input'))}){_hint(err)}")
        raise ConfigError("\n".join(lines)) from e
