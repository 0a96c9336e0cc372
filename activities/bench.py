"""The no-op activity of the benchmark's bare workflow."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity


class BareStepInput(BaseModel):
    step: int


class BareStepResult(BaseModel):
    step: int


@activity.defn(name="bare_step")
def bare_step(input: BareStepInput) -> BareStepResult:
    return BareStepResult(step=input.step)
