"""Options several commands take, each defined once: ``--json``, the ``NS/NAME`` a command acts
on, and groups of options (``deployments create`` and ``update`` take the same spec flags).

A group is a frozen dataclass whose fields are annotated like typer parameters;
:func:`with_options` puts them in the command's signature, in place of the one parameter typed
with the group, and hands the command one instance of it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from modelyard.errors import InvalidInput
from modelyard.types import ModelRef

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]
"""``--json``: print the command's data as JSON (see ``output.print_json``) instead of text."""


def split_target(target: str) -> tuple[str, str]:
    """``NS/NAME`` as (namespace, name); anything else is ``InvalidInput`` (exit code 2)."""
    ref = ModelRef.parse(target)
    return ref.namespace, ref.name


def option_errors(exc: ValidationError, flags: Mapping[str, str] | None = None) -> InvalidInput:
    """A spec the options built, refused: each problem said with the option it came from
    (``flags`` maps the fields whose option is not ``--field-name``) and the value given."""
    problems: dict[str, list[str]] = {}
    for e in exc.errors():
        if not e["loc"]:
            problems.setdefault(e["msg"], [])
            continue
        field = str(e["loc"][0])
        flag = (flags or {}).get(field, "--" + field.replace("_", "-"))
        said = problems.setdefault(f"{flag} {e.get('input')!r}", [])
        # A union's members each refuse the value: say what it may be, once.
        said.append(str(e["loc"][1]) if len(e["loc"]) > 1 else e["msg"])
    return InvalidInput("; ".join(where + _why(said) for where, said in problems.items()))


def _why(said: list[str]) -> str:
    if not said:
        return ""
    return f": {said[0]}" if len(said) == 1 else f": expected {', '.join(said)}"


Command = TypeVar("Command", bound=Callable[..., Any])


def with_options(group: type[Any]) -> Callable[[Command], Command]:
    """Give the decorated command the options of ``group`` (a dataclass of annotated fields):
    its parameter typed ``group`` is replaced by them, and receives them as one ``group``."""
    hints = typing.get_type_hints(group, include_extras=True)
    fields = [
        inspect.Parameter(
            field.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=field.default,
            annotation=hints[field.name],
        )
        for field in dataclasses.fields(group)
    ]

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        (slot,) = [p.name for p in signature.parameters.values() if p.annotation is group]
        parameters: list[inspect.Parameter] = []
        after = False  # the parameters after the group are keyword-only too (typer names all)
        for parameter in signature.parameters.values():
            if parameter.name == slot:
                parameters.extend(fields)
                after = True
            else:
                keyword = parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
                parameters.append(keyword if after else parameter)

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            values = group(**{field.name: kwargs.pop(field.name) for field in fields})
            return command(*args, **kwargs, **{slot: values})

        run.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return typing.cast(Command, run)

    return decorate
