"""Every public name of the package has a docstring."""

from __future__ import annotations

import inspect
from typing import Any, List

import turnstile
import turnstile.aio


def undocumented(module: Any) -> List[str]:
    missing = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{module.__name__}.{name}")
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                target = member.fget if isinstance(member, property) else member
                target = getattr(target, "__func__", target)  # classmethod, staticmethod
                if callable(target) and not (getattr(target, "__doc__", "") or "").strip():
                    missing.append(f"{module.__name__}.{name}.{attr}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    assert undocumented(turnstile) + undocumented(turnstile.aio) == []
