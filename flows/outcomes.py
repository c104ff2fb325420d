"""What the nightly did for one pipeline: the outcome it reports, and the error a pipeline's failure travels in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flows.report import PromotionReport
from rules.errors import OutcomeError


@dataclass
class PipelineOutcome:
    """What the nightly did for one pipeline file: promote-rc's report and, per environment promoted after
    the entry (in chain order), that promotion's report; ``failed_in`` names the run that failed."""

    pipeline_file: str
    rc: PromotionReport | None = None
    promotions: dict[str, PromotionReport] = field(default_factory=dict)
    failed: str | None = None
    failed_in: str | None = None
    # Fanned out (nightly fan_out_to="deployments"): the promote-pipeline run and what it said when it ended.
    run_id: str | None = None
    summary: str | None = None


class PipelineFailedError(OutcomeError, RuntimeError):
    """A part of a pipeline's run failed: which one (``stage``: promote-rc, promote-production...), why
    (``reason``), and what the parts before it did (``outcome``). Its message names the stage."""

    def __init__(self, stage: str, cause: Exception, outcome: PipelineOutcome) -> None:
        super().__init__(f"{stage}: {cause}")
        self.stage, self.reason, self.outcome = stage, str(cause), outcome

    def reported(self) -> PipelineOutcome:
        """What the nightly reports for the pipeline: the parts before the failure, and the failure."""
        self.outcome.failed, self.outcome.failed_in = self.reason, self.stage
        return self.outcome

    def __reduce__(self) -> tuple[object, ...]:
        # Prefect may pickle a failed run's exception (its state's data): rebuild it from what it holds.
        return (_rebuilt, (self.stage, self.reason, self.outcome))


def _rebuilt(stage: str, reason: str, outcome: PipelineOutcome) -> PipelineFailedError:
    return PipelineFailedError(stage, RuntimeError(reason), outcome)


Advance = Literal["all", "one-step"]
