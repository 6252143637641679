"""Templates escape everything they are given; basic auth compares both parts of the credentials."""

import base64
import re
from importlib import resources

import pytest

from server_responder.web.pages import basic_credentials_match
from server_responder.web.templates import Markup, PageTemplate, escape, join, static_files, template


@pytest.mark.parametrize("text, shown", [
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ('" onmouseover="x', "&quot; onmouseover=&quot;x"),
    ("it's", "it&#x27;s"),
    ("a & b", "a &amp; b"),
    (None, ""),
    (42, "42"),
])
def test_escape_makes_text_safe_in_content_and_quoted_attributes(text, shown):
    assert escape(text) == shown


def test_markup_built_by_the_package_is_not_escaped_twice():
    fragment = Markup("<b>bold</b>")
    assert escape(fragment) is fragment
    assert join([fragment, "<i>"]) == "<b>bold</b>&lt;i&gt;"


def test_template_escapes_every_value_and_keeps_markup():
    page = PageTemplate('<p title="$title">$body</p>$extra')
    rendered = page.render(title='"><script>', body="<img src=x onerror=alert(1)>", extra=Markup("<hr>"))
    assert rendered == '<p title="&quot;&gt;&lt;script&gt;">&lt;img src=x onerror=alert(1)&gt;</p><hr>'
    assert isinstance(rendered, Markup)


def test_a_value_that_looks_like_a_placeholder_is_not_substituted_again():
    assert PageTemplate("$a $b").render(a="$b", b="x") == "$b x"


def test_template_insists_on_exactly_the_values_it_names():
    page = PageTemplate("$title $body")
    with pytest.raises(ValueError, match=r"missing \['body'\]"):
        page.render(title="t")
    with pytest.raises(ValueError, match=r"unexpected \['bodyy'\]"):
        page.render(title="t", body="b", bodyy="typo")


def test_a_stray_dollar_sign_is_refused_when_the_template_is_made():
    with pytest.raises(ValueError, match="neither"):
        PageTemplate("costs $5")


def test_every_packaged_template_is_valid():
    names = [entry.name for entry in resources.files("server_responder").joinpath("templates").iterdir()]
    assert "layout.html" in names
    for name in names:
        assert template(name).identifiers is not None


def test_the_layout_loads_only_the_responders_own_assets():
    layout = template("layout.html").render(title="t", head="", content="", version="1", admin_link="")
    addresses = re.findall(r'(?:src|href)="([^"]*)"', layout)
    assert "/static/style.css" in addresses
    assert all(address.startswith("/") and not address.startswith("//") for address in addresses)


def test_static_files_are_packaged():
    files = static_files()
    assert {"style.css", "example.js", "favicon.svg"} <= set(files)
    assert b"textContent" in files["example.js"]
    assert b"innerHTML" not in files["example.js"]


def basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


@pytest.mark.parametrize("header, expected", [
    (basic(b"admin:pass word"), True),
    ("basic " + base64.b64encode(b"admin:pass word").decode(), True),
    (basic(b"admin:pass wor"), False),
    (basic(b"admin:pass word "), False),
    (basic(b"root:pass word"), False),
    (basic(b"Admin:pass word"), False),
    (basic(b"admin"), False),
    (basic(b":pass word"), False),
    (basic(b"admin:\xff"), False),
    ("Basic not base64!", False),
    ("Bearer " + base64.b64encode(b"admin:pass word").decode(), False),
    ("", False),
    (None, False),
])
def test_basic_credentials_match(header, expected):
    assert basic_credentials_match(header, "admin", "pass word") is expected


def test_a_password_may_contain_colons():
    assert basic_credentials_match(basic(b"admin:a:b:c"), "admin", "a:b:c")
    assert not basic_credentials_match(basic(b"admin:a:b"), "admin", "a:b:c")
