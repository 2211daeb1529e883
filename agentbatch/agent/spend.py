"""What the bulk runner asks of a run's spending guard; the run's budget implements it.

The guard decides per row (`admit`, `release`, `unpaid`), right before each call (`may_send`), and from
each outcome (`record`); once it stops the run, `stopped` says why and `cut_short` whether rows
were left unsent. A guard may say `watches_spend = False` when `may_send` could only repeat what
`record` decided (no token or cost limit): the runner then skips it."""

from __future__ import annotations

from typing import Protocol


class SpendGuard(Protocol):
    @property
    def stopped(self) -> Exception | None: ...

    @property
    def cut_short(self) -> bool: ...

    def admit(self) -> bool: ...

    def release(self) -> None: ...

    def unpaid(self) -> None: ...

    def may_send(self, in_flight: int) -> bool: ...

    def record(
        self,
        error: str | None,
        permanent: bool,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> bool:
        """Returns whether the guard may still send (`stopped is None`)."""
        ...
