"""Budgets of the stages that can grow with their input, and the error past one.

Saturation has its own (``saturate.Budget``: iterations, e-nodes, seconds, memory). The
others are here, each a count of work or bytes known before the stage starts (``check-steps``
is counted as the interpreter goes), so a refused input is refused at once and the same way
on every machine::

    tensorize(func, strassen=3, budgets=Budgets(strassen_products=100))
    BudgetError: 3 Strassen level(s) make 343 matmul products, over the strassen-products
    budget of 100; raise it with --budget strassen-products=N (Budgets.strassen_products in Python)

A stage over its budget raises ``BudgetError``, which names the budget and how to raise it;
the command line reports it as that function's error (exit status 2) and goes on with the
others. ``tensorize(budgets=...)`` and ``runtime.check(budgets=...)`` take them as arguments;
stages deep inside others (the dependence analysis) read the ones in force, set with
``using``. Stages without a budget are linear in the size of the program (lowering, codegen),
or past a fixed allowance answer more coarsely but soundly (the dependence tests of
``analysis``: ``ENUMERATION_BUDGET``, ``REFINE_BUDGET``).
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Iterator


@dataclass(frozen=True)
class Budgets:
    # Pairs of accesses (to one buffer, at least one writing) the dependence analysis of one
    # function may compare, at tens of microseconds each: 2^18 is seconds. Counted before it
    # starts; the pairs grow with the square of the statements touching one buffer.
    analysis_pairs: int = 1 << 18
    # Matmul products one Strassen rewrite may create (7 per level and matmul): each is a
    # nest to saturate, extract and compile, about 0.1-0.2 s apiece. A forced
    # ``--strassen N`` past it, over the function, is an error; under ``auto`` a product's
    # level counts past it are not offered.
    strassen_products: int = 100
    # Statement instances ``--check``'s interpreter may run (counted before it starts, loops
    # at their full extent): 2^32 covers a 1600^3 matmul, which runs vectorised in seconds.
    check_iterations: int = 1 << 32
    # Loop iterations the interpreter may run one at a time, where it cannot vectorise
    # (about 10 us each: 2^22 is under a minute).
    check_steps: int = 1 << 22
    # Bytes of buffers (parameters and temporaries) ``--check`` may allocate; it holds about
    # three copies of the parameters (inputs, interpreted and compiled results).
    check_memory: int = 512 << 20

    @staticmethod
    def names() -> list[str]:
        """The budgets' names on the command line: ``strassen-products``, ..."""
        return [f.name.replace("_", "-") for f in fields(Budgets)]

    def with_option(self, text: str) -> "Budgets":
        """These budgets with one ``NAME=N`` option applied; ValueError naming the problem."""
        name, sep, value = text.partition("=")
        if not sep or name.strip() not in self.names():
            raise ValueError(f"expected NAME=N with NAME one of {', '.join(self.names())}, not {text!r}")
        try:
            n = int(value.strip().replace("_", ""))
        except ValueError:
            raise ValueError(f"budget {name.strip()}: expected a positive integer, not {value.strip()!r}") from None
        if n <= 0:
            raise ValueError(f"budget {name.strip()}: expected a positive integer, not {n}")
        return replace(self, **{name.strip().replace("-", "_"): n})


_ACTIVE: ContextVar[Budgets] = ContextVar("budgets", default=Budgets())


def active() -> Budgets:
    """The budgets in force: ``Budgets()`` unless a caller chose others with ``using``."""
    return _ACTIVE.get()


@contextmanager
def using(budgets: Budgets) -> Iterator[Budgets]:
    """Run a block under ``budgets``: for stages deep inside others (the dependence analysis
    runs under normalisation, lowering, ...), which read them with ``active()``."""
    token = _ACTIVE.set(budgets)
    try:
        yield budgets
    finally:
        _ACTIVE.reset(token)


class BudgetError(Exception):
    """Work over a budget. ``what`` says what needed how much (``format_bytes`` helps);
    the message adds the budget and how to raise it."""

    def __init__(self, what: str, budget: str, limit: int):
        self.budget, self.limit = budget, limit
        memory = budget.endswith("memory")
        cap = format_bytes(limit) if memory else f"{limit:,}"
        super().__init__(f"{what}, over the {budget} budget of {cap}; raise it with --budget "
                         f"{budget}={'BYTES' if memory else 'N'} (Budgets.{budget.replace('-', '_')} in Python)")


def format_bytes(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,} bytes"
