"""Pipelines the CLI tests run: one that writes a long log."""

from __future__ import annotations

from modelyard.pipelines.dsl import pipeline, step


@step
def chatty(lines: int) -> int:
    # longer than 80 columns, and more than a pipe holds (64 KiB)
    for n in range(lines):
        print(f"line {n:>5} " + "x" * 120)
    return lines


@pipeline
def noisy(lines: int = 2000) -> None:
    chatty(lines=lines)
