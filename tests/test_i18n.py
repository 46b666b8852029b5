"""The panel's catalogs (static/i18n/<tag>.js) against each other and against the code.

Fast and without a browser: every catalog has the same keys with the same
{placeholders}; a plural message has an ``other`` form and only forms
CLDR knows; every key the panel's code uses (``t("…")``, ``tx("…")``,
``msgKey("…")`` in static/*.js, ``data-i18n`` and ``data-i18n-label`` in
index.html) is in every catalog, and every catalog key is used. A key added
in English and not yet translated fails here (the plural forms a language
needs are checked in the browser, with its Intl.PluralRules:
tests/browser/test_i18n.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parent.parent / "static"
CATALOGS = sorted((STATIC / "i18n").glob("*.js"))
PLURAL_FORMS = {"zero", "one", "two", "few", "many", "other"}
EXPORT = re.compile(r"\A(?:\s*//[^\n]*\n)*\s*export default (\{.*\});\s*\Z", re.S)
USED_IN_JS = re.compile(r"""\b(?:t|tx|msgKey)\(\s*"([^"]+)"\s*[,)]""")
USED_IN_HTML = re.compile(r"""\bdata-i18n(?:-label)?="([^"]+)\"""")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
COMMENT = re.compile(r"/\*.*?\*/|^\s*//[^\n]*$|(?<=[;,{(\s])//[^\n\"]*$", re.S | re.M)


def load(path: Path) -> dict[str, Any]:
    """A catalog module: comment lines, then ``export default`` and strict JSON."""
    m = EXPORT.match(path.read_text(encoding="utf-8"))
    assert m, f"{path.name}: not comment lines then `export default {{…}};`"
    data = json.loads(m.group(1))
    assert isinstance(data, dict)
    return data


def placeholders(message: str | dict[str, str]) -> set[str]:
    forms = message.values() if isinstance(message, dict) else [message]
    return {name for form in forms for name in PLACEHOLDER.findall(form)}


def used_keys() -> dict[str, str]:
    """Every key the code names → the file naming it first."""
    found: dict[str, str] = {}
    for path in sorted(STATIC.glob("*.js")):
        code = COMMENT.sub("", path.read_text(encoding="utf-8"))
        for key in USED_IN_JS.findall(code):
            found.setdefault(key, path.name)
    html = STATIC / "index.html"
    for key in USED_IN_HTML.findall(html.read_text(encoding="utf-8")):
        found.setdefault(key, html.name)
    return found


CATALOG = {path.stem: load(path) for path in CATALOGS}


def test_there_are_catalogs_and_the_code_uses_keys() -> None:
    assert {"en", "zh-CN"} <= set(CATALOG)
    assert len(used_keys()) > 100  # the extraction finds the keys (not vacuously empty)


@pytest.mark.parametrize("tag", sorted(set(CATALOG) - {"en"}))
def test_every_catalog_has_the_keys_and_placeholders_of_english(tag: str) -> None:
    en, other = CATALOG["en"], CATALOG[tag]
    missing = sorted(set(en) - set(other))
    extra = sorted(set(other) - set(en))
    assert not missing, f"{tag} has no message for {missing}"
    assert not extra, f"{tag} has messages English has not: {extra}"
    wrong = {
        key: (sorted(placeholders(en[key])), sorted(placeholders(other[key])))
        for key in en
        if placeholders(en[key]) != placeholders(other[key])
    }
    assert not wrong, f"{tag}: placeholders differ from English (en, {tag}): {wrong}"


@pytest.mark.parametrize("tag", sorted(CATALOG))
def test_messages_are_texts_or_plural_forms(tag: str) -> None:
    for key, message in CATALOG[tag].items():
        if isinstance(message, dict):
            assert "other" in message and set(message) <= PLURAL_FORMS, (tag, key, message)
            assert "n" in placeholders(message), (tag, key)
            message_forms = list(message.values())
        else:
            message_forms = [message]
        for form in message_forms:
            assert isinstance(form, str) and form.strip(), (tag, key)
            assert form.count("{") == form.count("}") == len(PLACEHOLDER.findall(form)), (tag, key)


@pytest.mark.parametrize("tag", sorted(CATALOG))
def test_every_key_the_code_uses_is_in_the_catalog_and_no_other(tag: str) -> None:
    used = used_keys()
    missing = {key: where for key, where in used.items() if key not in CATALOG[tag]}
    assert not missing, f"keys used but not in {tag}: {missing}"
    unused = sorted(set(CATALOG[tag]) - set(used))
    assert not unused, f"keys in {tag} that nothing uses: {unused}"


def test_a_missing_key_would_be_found(tmp_path: Path) -> None:
    """The checks above are not vacuous: a catalog without one key, or with a placeholder
    of its own, is told apart from English."""
    en = CATALOG["en"]
    key = "people.count.max"
    broken = {k: v for k, v in CATALOG["zh-CN"].items() if k != key}
    path = tmp_path / "xx.js"
    path.write_text("// broken\nexport default " + json.dumps(broken, ensure_ascii=False) + ";\n")
    assert set(en) - set(load(path)) == {key}
    assert placeholders(en["chat.left"]) == {"n"} != placeholders("还可输入 {count} 个字符")
