"""How much rendering a template may cost: steps taken and characters written.

Handlebars is small to write and large to run: four nested ``{{#each}}`` over 80 items are
1.3 KB of manifest and 40 million iterations, and one ``{{big}}`` repeated a thousand times
writes a thousand copies of a large config. The Ankaios server renders such a state (its
handlebars-rust is fast, the output is its problem); a connector that renders it to plan
or to check a policy froze for 18 s. So every render draws on a :class:`RenderBudget`, and
one that is used up raises :class:`RenderLimit`.

One budget can cover several renders (all a request needs: :func:`limited`); without one, each
:func:`ankaios_model.templating.render` call gets a fresh budget of the default size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["MAX_OUTPUT", "MAX_STEPS", "RenderBudget", "RenderLimit", "current", "limited"]

# About 0.2 s of rendering on a car's CPU; a manifest's templates need a few thousand.
MAX_STEPS = 200_000
# Characters written: room for a few large configs rendered into several workloads.
MAX_OUTPUT = 32 * 1024 * 1024


class RenderLimit(Exception):
    """Rendering would cost more than its budget allows.

    Not a :class:`~ankaios_model.templating.RenderError`: the template is valid and Ankaios
    would render it; the renderer here refuses to spend that much on it.
    """


@dataclass
class RenderBudget:
    """Steps and output left for rendering; shared by every render that draws on it."""

    max_steps: int = MAX_STEPS
    max_output: int = MAX_OUTPUT
    steps: int = 0
    output: int = 0

    def step(self) -> None:
        """One element rendered (text, expression, block, one iteration of a block)."""
        self.steps += 1
        if self.steps > self.max_steps:
            raise RenderLimit(f"rendering the templates takes more than {self.max_steps} steps")

    def wrote(self, characters: int) -> None:
        self.output += characters
        if self.output > self.max_output:
            raise RenderLimit(
                f"rendering the templates writes more than {self.max_output} characters"
            )


_ACTIVE: ContextVar[RenderBudget | None] = ContextVar("render_budget", default=None)


def current() -> RenderBudget:
    """The budget of the :func:`limited` block this runs in, else a fresh default one."""
    return _ACTIVE.get() or RenderBudget()


@contextlib.contextmanager
def limited(budget: RenderBudget | None = None) -> Iterator[RenderBudget]:
    """Every render inside draws on one budget: ``budget``, the enclosing block's, or a new one."""
    active = _ACTIVE.get()
    if budget is None and active is not None:
        yield active
        return
    chosen = budget or RenderBudget()
    token = _ACTIVE.set(chosen)
    try:
        yield chosen
    finally:
        _ACTIVE.reset(token)
