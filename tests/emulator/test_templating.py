"""Handlebars subset with handlebars-rust whitespace rules and strict errors."""

from __future__ import annotations

import pytest

from ankaios_model.templating import RenderError, render


def test_variables_and_paths() -> None:
    assert render("{{a}}-{{b.c}}-{{b/c}}", {"a": "1", "b": {"c": "2"}}) == "1-2-2"
    assert render('{{q}}&"<>', {"q": '"&<'}) == '"&<&"<>'  # no HTML escaping
    assert render("{{{a}}}", {"a": "<x>"}) == "<x>"
    assert render("{{l}}|{{o}}", {"l": ["a", "b"], "o": {"k": "v"}}) == "[a, b]|[object]"


def test_each_over_list_and_map() -> None:
    ctx = {"env": [{"key": "A", "value": "1"}, {"key": "B", "value": "2"}], "m": {"x": "1"}}
    assert render("{{#each env}}{{key}}={{value}};{{/each}}", ctx) == "A=1;B=2;"
    assert render("{{#each env}}{{@index}}{{/each}}", ctx) == "01"
    assert render("{{#each m}}{{@key}}:{{this}}{{/each}}", ctx) == "x:1"
    assert render("{{#each e}}x{{else}}empty{{/each}}", {"e": []}) == "empty"
    assert render("{{#each e}}x{{/each}}", {"e": []}) == ""


def test_if_unless_with() -> None:
    assert render("{{#if a}}y{{else}}n{{/if}}", {"a": ""}) == "n"
    assert render("{{#if missing}}y{{else}}n{{/if}}", {}) == "n"
    assert render("{{#unless a}}y{{/unless}}", {"a": ""}) == "y"
    assert render("{{#with o}}{{k}}{{/with}}", {"o": {"k": "v"}}) == "v"


def test_standalone_lines_are_removed() -> None:
    template = 'opts:\n  - "a"\n  {{#each c.env}}\n  - "{{key}}"\n  {{/each}}\nend'
    ctx = {"c": {"env": [{"key": "K1"}, {"key": "K2"}]}}
    assert render(template, ctx) == 'opts:\n  - "a"\n  - "K1"\n  - "K2"\nend'


def test_whitespace_control() -> None:
    assert render("a   {{~x~}}   b", {"x": "-"}) == "a-b"


def test_indent_partial() -> None:
    template = "data:\n  conf: |\n    {{> indent content=cfg}}\nnext: 1"
    assert render(template, {"cfg": "line1\n\nline2\n"}) == (
        "data:\n  conf: |\n    line1\n    \n    line2\nnext: 1"
    )
    assert render("x: {{cfg}}", {"cfg": "a\nb"}) == "x: a\nb"


def test_strict_missing_variable() -> None:
    with pytest.raises(RenderError) as err:
        render("a\n  {{c.missing}}", {"c": {}})
    assert str(err.value) == (
        'Error rendering "Unnamed template" line 2, col 3: '
        'Failed to access variable in strict mode Some("c.missing")'
    )


def test_strict_missing_inside_each_and_each_over_missing() -> None:
    with pytest.raises(RenderError, match=r'line 1, col 16: .*Some\("nope"\)'):
        render("{{#each items}}{{nope}}{{/each}}", {"items": [{"a": "1"}]})
    with pytest.raises(RenderError, match=r'line 1, col 1: .*Some\("c.env"\)'):
        render("{{#each c.env}}x{{/each}}", {"c": {}})


def test_indent_partial_missing_content() -> None:
    with pytest.raises(RenderError) as err:
        render("{{> indent content=nope}}", {})
    assert str(err.value) == (
        'Error rendering "indent" line 1, col 1: '
        'Failed to access variable in strict mode Some("content")'
    )


def test_unknown_partial_and_helper() -> None:
    with pytest.raises(RenderError, match="Partial not found other"):
        render("{{> other}}", {})
    with pytest.raises(RenderError, match="Helper not found foo"):
        render("{{#foo x}}{{/foo}}", {"x": "1"})
    with pytest.raises(RenderError, match="Failed to parse template"):
        render("{{#each x}}", {"x": []})
