"""``@step`` and ``@pipeline``: the pipeline DSL, shaped like Kubeflow Pipelines v2.

    @step(retries=2, timeout_seconds=600)
    def train(data: Input[Dataset], model: Output[Model], epochs: int = 3) -> float: ...

    @pipeline
    def nightly(catalog: str = "shop/catalog@latest") -> None:
        data = importer("dataset", catalog)
        fit = train(data=data, epochs=5)
        with If(fit.output > 0.9):
            fit.publish("model", "shop/ranker", alias="candidate")

Calling a step inside a pipeline function records a task; nothing runs until the compiled spec is
executed. ``pipeline.compile()`` checks the wiring (types, missing parameters, cycles) and returns
a :class:`PipelineSpec`.
"""

from __future__ import annotations

import contextvars
import hashlib
import inspect
import sys
import textwrap
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from modelyard.errors import InvalidInput
from modelyard.pipelines.artifacts import Artifact, InputMarker, OutputMarker
from modelyard.pipelines.spec import (
    PYTHON_TYPES,
    ArtifactSource,
    ArtifactSpec,
    Condition,
    Loop,
    ParamSpec,
    ParamType,
    PipelineSpec,
    Publish,
    Resources,
    Retry,
    StepSpec,
    TaskSpec,
    Value,
)
from modelyard.types import ModelRef, check_name

P = typing.ParamSpec("P")
R = TypeVar("R")
_builder: contextvars.ContextVar[_Builder | None] = contextvars.ContextVar("builder", default=None)


# values flowing through a pipeline ---------------------------------------------------------------
class PipelineValue:
    """A value known only when the pipeline runs: a parameter, a task's result, a loop item."""

    def __init__(self, value: Value, type: ParamType | None) -> None:
        self.value = value
        self.type = type

    def _compare(self, op: str, other: object) -> Comparison:
        return Comparison(Condition(left=self.value, op=op, right=_as_value(other)))

    def __eq__(self, other: object) -> Comparison:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: object) -> Comparison:  # type: ignore[override]
        return self._compare("!=", other)

    def __lt__(self, other: object) -> Comparison:
        return self._compare("<", other)

    def __le__(self, other: object) -> Comparison:
        return self._compare("<=", other)

    def __gt__(self, other: object) -> Comparison:
        return self._compare(">", other)

    def __ge__(self, other: object) -> Comparison:
        return self._compare(">=", other)

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise InvalidInput(
            "a pipeline value is known only when the pipeline runs: use "
            "'with If(value == x):' instead of 'if value == x:'"
        )


class Comparison:
    """``value > 1`` inside a pipeline: a condition for ``If``, not a bool."""

    def __init__(self, condition: Condition) -> None:
        self.condition = condition

    def __bool__(self) -> bool:
        raise InvalidInput(
            "a pipeline value is known only when the pipeline runs: use "
            "'with If(value == x):' instead of 'if value == x:'"
        )


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact a task produces (or a registry version it imports)."""

    source: ArtifactSource
    type: str
    loop: str | None = None


class Collected:
    """Every iteration's output of a task inside a fan-out, as one list input."""

    def __init__(self, ref: ArtifactRef) -> None:
        if not isinstance(ref, ArtifactRef) or ref.loop is None:
            raise InvalidInput("Collected() takes an artifact output of a task inside ParallelFor")
        self.ref = ArtifactRef(
            source=ref.source.model_copy(update={"collect": True}), type=ref.type
        )


def _as_value(obj: object) -> Value:
    if isinstance(obj, PipelineValue):
        return obj.value
    if isinstance(obj, ArtifactRef | Task | Collected):
        raise InvalidInput("an artifact cannot be used as a parameter value")
    return Value(const=obj)


def importer(kind: Literal["model", "dataset"], ref: str | PipelineValue) -> ArtifactRef:
    """A model or dataset version of the registry as an input artifact (pinned at run start)."""
    if isinstance(ref, str):
        ModelRef.parse(ref)
    return ArtifactRef(
        source=ArtifactSource(registry_kind=kind, registry_ref=_as_value(ref)),
        type="Model" if kind == "model" else "Dataset",
    )


# steps ---------------------------------------------------------------------------------------
def _param_type(annotation: Any, where: str) -> ParamType:
    origin = typing.get_origin(annotation) or annotation
    for name, python_type in PYTHON_TYPES.items():
        if origin is python_type:
            return name  # type: ignore[return-value]
    raise InvalidInput(
        f"{where}: parameters are str, int, float, bool, list or dict; "
        f"artifacts are Input[Dataset], Output[Model], ... (got {annotation!r})"
    )


def _artifact(annotation: Any) -> tuple[str, ArtifactSpec | None]:
    """('input'|'output'|'param', spec) for one annotated parameter."""
    if typing.get_origin(annotation) is not typing.Annotated:
        return "param", None
    base, *extras = typing.get_args(annotation)
    direction = (
        "input" if InputMarker in extras else "output" if OutputMarker in extras else "param"
    )
    if direction == "param":
        return direction, None
    collected = typing.get_origin(base) is list
    if collected:
        (base,) = typing.get_args(base)
    if not (inspect.isclass(base) and issubclass(base, Artifact)):
        raise InvalidInput(f"Input[...] and Output[...] take an artifact type, not {base!r}")
    return direction, ArtifactSpec(name="", type=base.TYPE, collected=collected)


class Step(Generic[P, R]):
    """A Python function that runs in its own process as one node of a pipeline."""

    def __init__(self, func: Callable[P, R], spec: StepSpec) -> None:
        self.func = func
        self.spec = spec
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Task:
        # Not P: inside a pipeline, inputs are wired task outputs and outputs are left out.
        builder = _builder.get()
        if builder is None:
            raise InvalidInput(
                f"step {self.spec.name!r} was called outside a @pipeline function: "
                "call it inside one, or call .func() to run the function directly"
            )
        if args:
            raise InvalidInput(f"step {self.spec.name!r}: pass arguments by name")
        return builder.add(self, kwargs)


@typing.overload
def step(func: Callable[P, R]) -> Step[P, R]: ...


@typing.overload
def step(
    func: None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff_seconds: float = 1.0,
    timeout_seconds: float | None = None,
    cpu: float | None = None,
    memory_mb: int | None = None,
    env: dict[str, str] | None = None,
    cache: bool = True,
    cache_ttl_seconds: float | None = None,
    image: str | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    func: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff_seconds: float = 1.0,
    timeout_seconds: float | None = None,
    cpu: float | None = None,
    memory_mb: int | None = None,
    env: dict[str, str] | None = None,
    cache: bool = True,
    cache_ttl_seconds: float | None = None,
    image: str | None = None,
) -> Any:
    """Make ``func`` a pipeline step: bare (``@step``) or with options (``@step(retries=2)``).

    ``image``: the container image the step runs in on Kubernetes (the platform's runner is
    copied into it; it needs ``python3`` of the platform image's minor version); local steps
    run with this machine's Python whatever it names."""

    def wrap(f: Callable[P, R]) -> Step[P, R]:
        step_name = name or f.__name__.replace("_", "-")
        check_name(step_name, "step name")
        hints = typing.get_type_hints(f, include_extras=True)
        params: list[ParamSpec] = []
        inputs: list[ArtifactSpec] = []
        outputs: list[ArtifactSpec] = []
        for pname, parameter in inspect.signature(f).parameters.items():
            if pname not in hints:
                raise InvalidInput(f"step {step_name!r}: annotate parameter {pname!r} with a type")
            direction, art = _artifact(hints[pname])
            if art is not None:
                (inputs if direction == "input" else outputs).append(
                    art.model_copy(update={"name": pname})
                )
                continue
            has_default = parameter.default is not inspect.Parameter.empty
            params.append(
                ParamSpec(
                    name=pname,
                    type=_param_type(hints[pname], f"step {step_name!r} {pname!r}"),
                    default=parameter.default if has_default else None,
                    required=not has_default,
                )
            )
        returns = hints.get("return")
        source = textwrap.dedent(inspect.getsource(f))
        spec = StepSpec(
            name=step_name,
            function=f.__name__,
            source=source,
            source_digest=hashlib.sha256(source.encode()).hexdigest(),
            params=params,
            inputs=inputs,
            outputs=outputs,
            returns=None
            if returns in (None, type(None))
            else _param_type(returns, f"step {step_name!r} return"),
            retry=Retry(count=retries, backoff_seconds=backoff_seconds),
            timeout_seconds=timeout_seconds,
            resources=Resources(cpu=cpu, memory_mb=memory_mb),
            env=dict(env or {}),
            cache=cache,
            cache_ttl_seconds=cache_ttl_seconds,
            image=image,
        )
        return Step(f, spec)

    return wrap(func) if func is not None else wrap


# tasks and the builder ------------------------------------------------------------------------
class Task:
    """One call of a step inside a pipeline: a node of the DAG."""

    def __init__(self, spec: TaskSpec, step: Step[Any, Any], loop: str | None) -> None:
        self._spec = spec
        self.step = step
        self.loop = loop

    @property
    def id(self) -> str:
        return self._spec.id

    @property
    def output(self) -> PipelineValue:
        if self.step.spec.returns is None:
            raise InvalidInput(
                f"step {self.step.spec.name!r} returns nothing: annotate its "
                "return type to use .output"
            )
        return PipelineValue(Value(task=self.id), self.step.spec.returns)

    @property
    def outputs(self) -> dict[str, ArtifactRef]:
        return {
            o.name: ArtifactRef(ArtifactSource(task=self.id, output=o.name), o.type, self.loop)
            for o in self.step.spec.outputs
        }

    def _update(self, **changes: Any) -> Task:
        self._spec = self._spec.model_copy(update=changes)
        _current().tasks[self.id] = self
        return self

    def after(self, *tasks: Task) -> Task:
        return self._update(after=sorted({*self._spec.after, *(t.id for t in tasks)}))

    def set_caching_options(self, enable_caching: bool) -> Task:
        return self._update(cache=enable_caching)

    def set_retry(self, count: int, backoff_seconds: float = 1.0) -> Task:
        return self._update(retry=Retry(count=count, backoff_seconds=backoff_seconds))

    def set_timeout(self, seconds: float) -> Task:
        return self._update(timeout_seconds=seconds)

    def set_env_variable(self, name: str, value: str) -> Task:
        return self._update(env={**self._spec.env, name: value})

    def publish(
        self, output: str, model: str, *, alias: str | None = None, runtime: str | None = None
    ) -> Task:
        """Commit the Model output ``output`` to the model repository once this task succeeds."""
        found = {o.name: o for o in self.step.spec.outputs}
        if found.get(output) is None or found[output].type != "Model":
            raise InvalidInput(f"task {self.id!r} has no Output[Model] named {output!r}")
        ref = ModelRef.parse(model)
        if ref.ref != "latest":
            raise InvalidInput(f"publish to {model!r}: give namespace/name, without a version")
        if self.loop is not None:
            raise InvalidInput("a task inside ParallelFor cannot publish: publish after Collected")
        publish = Publish(
            output=output, model=f"{ref.namespace}/{ref.name}", alias=alias, runtime=runtime
        )
        return self._update(publish=[*self._spec.publish, publish])


@dataclass
class _Builder:
    tasks: dict[str, Task] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    loop: Loop | None = None
    loops: int = 0

    def add(self, step: Step[Any, Any], kwargs: dict[str, Any]) -> Task:
        spec = step.spec
        task_id, n = spec.name, 1
        while task_id in self.tasks:
            n += 1
            task_id = f"{spec.name}-{n}"
        outputs = {o.name for o in spec.outputs} & set(kwargs)
        if outputs:
            raise InvalidInput(
                f"step {spec.name!r}: {sorted(outputs)[0]!r} is an output; "
                "outputs are created by the step, do not pass them"
            )
        known = {p.name for p in spec.params} | {i.name for i in spec.inputs}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidInput(
                f"step {spec.name!r} has no parameter {unknown[0]!r}; it takes "
                f"{sorted(known) or 'none'}"
            )
        params: dict[str, Value] = {}
        for p in spec.params:
            if p.name in kwargs:
                params[p.name] = self._param(spec.name, p, kwargs[p.name])
            elif p.required:
                raise InvalidInput(f"step {spec.name!r} needs parameter {p.name!r} ({p.type})")
        inputs: dict[str, ArtifactSource] = {}
        for i in spec.inputs:
            if i.name not in kwargs:
                raise InvalidInput(
                    f"step {spec.name!r} needs input artifact {i.name!r} "
                    f"({'list of ' if i.collected else ''}{i.type})"
                )
            inputs[i.name] = self._input(spec.name, i, kwargs[i.name])
        task = Task(
            TaskSpec(
                id=task_id,
                step=spec.name,
                params=params,
                inputs=inputs,
                conditions=list(self.conditions),
                loop=self.loop,
            ),
            step,
            self.loop.id if self.loop else None,
        )
        self.tasks[task_id] = task
        return task

    def _param(self, step: str, p: ParamSpec, given: Any) -> Value:
        if isinstance(given, PipelineValue):
            if (
                given.type is not None
                and given.type != p.type
                and not (given.type == "int" and p.type == "float")
            ):
                raise InvalidInput(
                    f"step {step!r} parameter {p.name!r} is {p.type}, but "
                    f"{given.value.source()} is {given.type}"
                )
            return given.value
        value = _as_value(given)
        expected = PYTHON_TYPES[p.type]
        ok = isinstance(given, expected) and not (expected is int and isinstance(given, bool))
        if not ok and not (expected is float and isinstance(given, int)):
            raise InvalidInput(f"step {step!r} parameter {p.name!r} is {p.type}, got {given!r}")
        return value

    def _input(self, step: str, spec: ArtifactSpec, given: Any) -> ArtifactSource:
        if isinstance(given, Task):
            raise InvalidInput(
                f"step {step!r} input {spec.name!r}: pass one of the task's "
                f"outputs, e.g. task.outputs[{given.step.spec.outputs[0].name!r}]"
                if given.step.spec.outputs
                else f"task {given.id!r} has no outputs"
            )
        if isinstance(given, Collected):
            ref = given.ref
            if not spec.collected:
                raise InvalidInput(
                    f"step {step!r} input {spec.name!r} takes one {spec.type}; "
                    f"declare Input[list[{spec.type}]] to take Collected(...)"
                )
        elif isinstance(given, ArtifactRef):
            ref = given
            if spec.collected:
                raise InvalidInput(
                    f"step {step!r} input {spec.name!r} takes a list: pass "
                    "Collected(task.outputs[...]) of a task inside ParallelFor"
                )
            if ref.loop is not None and ref.loop != (self.loop.id if self.loop else None):
                raise InvalidInput(
                    f"step {step!r} input {spec.name!r} comes from inside a "
                    "ParallelFor: wrap it in Collected(...)"
                )
        else:
            raise InvalidInput(
                f"step {step!r} input {spec.name!r} takes an artifact, got {given!r}"
            )
        if spec.type != "Artifact" and ref.type not in (spec.type, "Artifact"):
            raise InvalidInput(
                f"step {step!r} input {spec.name!r} takes {spec.type}, but it is "
                f"wired to a {ref.type}"
            )
        return ref.source


def _current() -> _Builder:
    builder = _builder.get()
    if builder is None:
        raise InvalidInput("this works only inside a @pipeline function")
    return builder


@contextmanager
def If(condition: Comparison) -> Iterator[None]:
    """Tasks created inside run only when ``condition`` holds when the run gets there."""
    if not isinstance(condition, Comparison):
        raise InvalidInput("If() takes a comparison of a pipeline value, e.g. If(task.output > 1)")
    builder = _current()
    builder.conditions.append(condition.condition)
    try:
        yield
    finally:
        builder.conditions.pop()


@contextmanager
def ParallelFor(items: list[Any] | PipelineValue) -> Iterator[PipelineValue]:
    """Run the tasks created inside once per item, in parallel; ``Collected`` gathers results."""
    builder = _current()
    if builder.loop is not None:
        raise InvalidInput("ParallelFor cannot be nested yet: flatten the list instead")
    if isinstance(items, PipelineValue) and items.type not in (None, "list"):
        raise InvalidInput(f"ParallelFor takes a list, got {items.value.source()} ({items.type})")
    if not isinstance(items, PipelineValue | list):
        raise InvalidInput(f"ParallelFor takes a list, got {items!r}")
    builder.loops += 1
    builder.loop = Loop(id=f"loop-{builder.loops}", items=_as_value(items))
    try:
        yield PipelineValue(Value(loop=builder.loop.id), None)
    finally:
        builder.loop = None


# pipelines -----------------------------------------------------------------------------------
class Pipeline:
    def __init__(self, func: Callable[..., Any], name: str, description: str) -> None:
        self.func = func
        self.name = check_name(name, "pipeline name")
        self.description = description

    def compile(self) -> PipelineSpec:
        hints = typing.get_type_hints(self.func)
        params: list[ParamSpec] = []
        placeholders: dict[str, PipelineValue] = {}
        for pname, parameter in inspect.signature(self.func).parameters.items():
            ptype = _param_type(hints.get(pname), f"pipeline {self.name!r} parameter {pname!r}")
            has_default = parameter.default is not inspect.Parameter.empty
            params.append(
                ParamSpec(
                    name=pname,
                    type=ptype,
                    required=not has_default,
                    default=parameter.default if has_default else None,
                )
            )
            placeholders[pname] = PipelineValue(Value(param=pname), ptype)
        builder = _Builder()
        token = _builder.set(builder)
        try:
            self.func(**placeholders)
        finally:
            _builder.reset(token)
        if not builder.tasks:
            raise InvalidInput(f"pipeline {self.name!r} calls no step")
        tasks = [t._spec for t in builder.tasks.values()]
        steps = {t.step.spec.name: t.step.spec for t in builder.tasks.values()}
        module = sys.modules[self.func.__module__]
        module_file = inspect.getsourcefile(module)
        spec = PipelineSpec(
            name=self.name,
            description=self.description,
            params=params,
            steps=steps,
            tasks=tasks,
            module=self.func.__module__,
            module_source=inspect.getsource(module),
            code_root=_code_root(module_file, self.func.__module__),
        )
        from modelyard.pipelines.validate import validate

        validate(spec)
        return spec


def _code_root(module_file: str | None, module: str) -> str | None:
    if module_file is None:
        return None
    root = Path(module_file).resolve().parent
    for _ in range(module.count(".")):
        root = root.parent
    return str(root)


@typing.overload
def pipeline(func: Callable[..., Any]) -> Pipeline: ...


@typing.overload
def pipeline(
    func: None = None, *, name: str | None = None, description: str = ""
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    func: Callable[..., Any] | None = None, *, name: str | None = None, description: str = ""
) -> Any:
    """Make ``func`` a pipeline: its body wires step calls into a DAG."""

    def wrap(f: Callable[..., Any]) -> Pipeline:
        return Pipeline(
            f, name or f.__name__.replace("_", "-"), description or inspect.getdoc(f) or ""
        )

    return wrap(func) if func is not None else wrap
