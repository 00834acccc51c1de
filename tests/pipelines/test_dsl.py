from __future__ import annotations

import re

import pytest

from modelyard.errors import InvalidInput
from modelyard.pipelines.artifacts import Dataset, Input, Model, Output
from modelyard.pipelines.dsl import Collected, ParallelFor, pipeline, step
from modelyard.pipelines.validate import validate
from tests.pipelines import flows


def test_compiled_spec_is_a_dag_with_a_stable_content_hash() -> None:
    spec = flows.chain.compile()
    assert [t.id for t in spec.tasks] == ["make", "count", "train", "make-2", "total"]
    assert spec.upstream(spec.task("train")) == {"make", "count"}
    assert spec.task("make-2").loop is not None
    assert spec.task("total").inputs["parts"].collect
    assert spec.task("train").publish[0].model == "team/clf"
    order = validate(spec)
    assert order.index("make") < order.index("count") < order.index("train")
    assert flows.chain.compile().digest() == spec.digest()
    assert spec.steps["make"].source_digest != spec.steps["count"].source_digest


@step
def produce(out: Output[Model]) -> int:
    return 1


@step
def consume(data: Input[Dataset], n: int) -> None:
    pass


@step
def gather(parts: Input[list[Dataset]]) -> None:
    pass


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: consume(data=produce().outputs["out"], n=1), "takes Dataset, but it is wired to"),
        (lambda: consume(data=None, n=1), "takes an artifact"),
        (lambda: consume(n=1), "needs input artifact 'data'"),
        (
            lambda: flows.count(data=flows.make(ledger="x", rows=1).outputs["out"]),
            "needs parameter 'ledger'",
        ),
        (lambda: flows.make(ledger="x", rows="many"), "is int, got 'many'"),
        (lambda: flows.make(ledger="x", rows=1, colour="red"), "has no parameter 'colour'"),
        (lambda: flows.make(ledger="x", rows=1, out=None), "is an output"),
        (lambda: consume(data=produce(), n=1), "pass one of the task's outputs"),
        (lambda: gather(parts=flows.make(ledger="x", rows=1).outputs["out"]), "takes a list"),
    ],
)
def test_miswired_pipelines_fail_at_compile_time(build: object, message: str) -> None:
    @pipeline(name="broken")
    def broken() -> None:
        build()  # type: ignore[operator]

    with pytest.raises(InvalidInput, match=re.escape(message)):
        broken.compile()


def test_a_cycle_is_refused() -> None:
    @pipeline(name="loop")
    def loop() -> None:
        a = flows.make(ledger="x", rows=1)
        b = flows.count(ledger="x", data=a.outputs["out"])
        a.after(b)

    with pytest.raises(InvalidInput, match="cycle"):
        loop.compile()


def test_fan_out_outputs_need_collected_outside_the_loop() -> None:
    @pipeline(name="leak")
    def leak(sizes: list[int]) -> None:
        with ParallelFor(sizes) as size:
            part = flows.make(ledger="x", rows=size)
        flows.count(ledger="x", data=part.outputs["out"])

    with pytest.raises(InvalidInput, match="Collected"):
        leak.compile()

    @pipeline(name="ok")
    def ok(sizes: list[int]) -> None:
        with ParallelFor(sizes) as size:
            part = flows.make(ledger="x", rows=size)
        flows.total(ledger="x", parts=Collected(part.outputs["out"]))

    assert ok.compile().task("total").inputs["parts"].collect


def test_steps_outside_a_pipeline_and_python_if_are_explained() -> None:
    with pytest.raises(InvalidInput, match="outside a @pipeline"):
        flows.make(ledger="x", rows=1)

    @pipeline(name="python-if")
    def python_if() -> None:
        counted = flows.count(ledger="x", data=flows.make(ledger="x", rows=1).outputs["out"])
        if counted.output > 1:
            pass

    with pytest.raises(InvalidInput, match="with If"):
        python_if.compile()
