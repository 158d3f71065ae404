"""Every exception class the project defines is a TributaError (click's exit signals aside), and
no two share a name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import click
import pytest

from tributa.errors import TributaError

PACKAGES = ("tributa", "oracle", "compute_agent")


def _modules():
    for name in PACKAGES:
        package = importlib.import_module(name)
        yield package
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            # __main__ runs its command on import; alembic's migration scripts run only under alembic
            if not info.name.endswith(".__main__") and ".migrations" not in info.name:
                yield importlib.import_module(info.name)


@pytest.fixture(scope="module")
def defined() -> list[type]:
    found = {}
    for module in _modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            # A click.ClickException subclass is the CLI's way to exit with a code, not an error of ours.
            if (
                issubclass(obj, BaseException)
                and not issubclass(obj, click.ClickException)
                and obj.__module__ == module.__name__
            ):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_errors__every_exception_the_project_defines__is_a_tributa_error(defined):
    assert len(defined) >= 40  # the walk really found the project's errors
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in defined if not issubclass(c, TributaError))
    assert outside == []


def test_errors__no_two_project_exceptions__share_a_name(defined):
    names = [c.__name__ for c in defined]
    assert sorted({n for n in names if names.count(n) > 1}) == []
