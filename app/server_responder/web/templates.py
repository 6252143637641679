"""HTML from standard-library templates: every value is escaped unless it is markup this package built."""

from __future__ import annotations

import functools
import html
import string
from collections.abc import Iterable
from importlib import resources


class Markup(str):
    """HTML written by this package or already escaped: a template inserts it as it is."""


def escape(value: object) -> Markup:
    """Text made safe for element content and quoted attribute values; `None` shows as nothing."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def join(fragments: Iterable[object]) -> Markup:
    return Markup("".join(escape(fragment) for fragment in fragments))


class PageTemplate:
    """A `string.Template` that escapes what it is given and insists on exactly the values it names."""

    def __init__(self, text: str, name: str = "<string>") -> None:
        self.name = name
        self._template = string.Template(text)
        if not self._template.is_valid():
            raise ValueError(f"template {name}: a $ that is neither $$ nor a placeholder")
        self.identifiers = frozenset(self._template.get_identifiers())

    def render(self, **values: object) -> Markup:
        given = set(values)
        if given != self.identifiers:
            missing = sorted(self.identifiers - given)
            unexpected = sorted(given - self.identifiers)
            raise ValueError(f"template {self.name}: missing {missing}, unexpected {unexpected}")
        return Markup(self._template.substitute({key: escape(value) for key, value in values.items()}))


@functools.cache
def template(name: str) -> PageTemplate:
    """A template from the package's `templates/` directory."""
    text = resources.files("server_responder").joinpath("templates", name).read_text(encoding="utf-8")
    return PageTemplate(text, name)


def static_files() -> dict[str, bytes]:
    """The package's `static/` files by name: the only names `/static/{name}` answers for."""
    folder = resources.files("server_responder").joinpath("static")
    return {entry.name: entry.read_bytes() for entry in folder.iterdir() if entry.is_file()}
