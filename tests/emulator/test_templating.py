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


def test_comparison_helpers_follow_handlebars_rust() -> None:
    # serde_json equality: no coercion between strings, numbers and booleans
    assert render('{{eq a "40"}} {{eq a 40}} {{ne a 40}}', {"a": "40"}) == "true false true"
    assert render("{{eq 1 1}} {{eq 1 1.0}} {{eq true 1}} {{eq null null}}", {}) == (
        "true false false true"
    )
    assert render("{{eq l m}} {{eq o p}}", {"l": ["a"], "m": ["a"], "o": {"k": "v"}, "p": {}}) == (
        "true false"
    )
    # compare_json: strings compare as strings, a number against a string that reads as
    # a JSON number numerically, anything else is never ordered
    assert render('{{gt "9" "10"}} {{gt 9 "10"}} {{lt 9 "10"}} {{lte "a" "a"}}', {}) == (
        "true false true true"
    )
    assert render('{{lt 1 " 2"}} {{gte 1 "01"}} {{lt 1 l}} {{gt true false}}', {"l": []}) == (
        "false false false true"
    )


def test_boolean_and_len_helpers() -> None:
    ctx = {"e": "", "s": "x", "l": [1, 2], "o": {"a": "1"}, "u": "é"}
    assert render("{{and s l}} {{and s e}} {{and}} {{or e s}} {{or}}", ctx) == (
        "true false true true false"
    )
    assert render("{{not e}} {{not o}} {{not 0}} {{not 0.5}}", ctx) == "true false true false"
    # and/or read a missing value as null, even in strict mode
    assert render("{{or missing s}}", ctx) == "true"
    # len counts UTF-8 bytes of a string (Rust's str::len), entries of lists and maps
    assert render("{{len l}} {{len o}} {{len u}} {{len 5}}", ctx) == "2 1 2 0"


def test_helpers_in_sub_expressions_and_blocks() -> None:
    people = {"p": [{"n": "A", "age": "30"}, {"n": "B", "age": "40"}]}
    template = '{{#each p}}{{#if (eq this.age "40")}}{{n}}{{/if}}{{/each}}'
    assert render(template, people) == "B"
    assert (
        render(
            '{{#each p}}{{#unless (or (eq age "30") (eq n "x"))}}{{n}}{{/unless}}{{/each}}', people
        )
        == "B"
    )
    assert render("{{#if (gt (len p) 1)}}many{{/if}}", people) == "many"
    assert render('{{#eq p.0.n "A"}}first{{else}}other{{/eq}}', people) == "first"
    assert render("{{#len p}}ignored{{/len}}", people) == "2"


def test_helper_errors_are_handlebars_rusts() -> None:
    with pytest.raises(RenderError) as err:
        render("x {{eq missing 1}}", {})
    assert str(err.value) == (
        'Error rendering "Unnamed template" line 1, col 3: '
        "Helper/Decorator eq param at index 0 required but not found"
    )
    with pytest.raises(RenderError, match="Helper/Decorator gt param at index 1 required"):
        render("{{#if (gt 1)}}x{{/if}}", {})
    with pytest.raises(RenderError, match="Helper/Decorator not param at index 0 required"):
        render("{{not nope}}", {})
    with pytest.raises(RenderError, match="Helper/Decorator len param with name x required"):
        render("{{len}}", {})
    with pytest.raises(RenderError, match="Helper not found foo"):
        render("{{foo a}}", {"a": "1"})
    with pytest.raises(RenderError, match="Helper not found foo"):
        render("{{#if (foo a)}}x{{/if}}", {"a": "1"})
