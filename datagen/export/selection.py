"""Which samples an export reads: one object every writer and every kind takes.

A filter is a field here and a line in `to_filter` (and `describe`, for the dataset card); the
writers never see the options, only the SampleFilter the review API uses too.
"""

from __future__ import annotations

from dataclasses import dataclass

from datagen import storage
from datagen.config import LANGS
from datagen.errors import InputError
from datagen.records import KEPT, Status
from datagen.storage import queries


# --status: which states make a record. `any`: every state (review decisions: KTO labels).
STATUSES: dict[str, tuple[str, ...]] = {
    "accepted": KEPT,
    "approved": (Status.approved.value,),
    "discarded": (Status.discarded.value,),
    "any": (),
}
# What each kind reads when --status is not given: training data is what is kept; a reviewer's
# edit counts while its sample is kept (a discarded one was thrown out with the edit); a KTO label
# is every approve and reject, so every state.
DEFAULT_STATUS = {"sft": "accepted", "preference": "accepted", "kto": "any"}


@dataclass(frozen=True)
class Selection:
    run: str | None = None
    status: str = "accepted"
    lang: str | None = None
    chosen: str | None = None  # --selection NAME (datagen select)
    min_scores: tuple[str, ...] = ()  # --min-score KEY=VALUE, e.g. judge:accuracy=4.5

    def check(self) -> None:
        if self.status not in STATUSES:
            raise InputError(f"unknown status {self.status!r}: use {', '.join(STATUSES)}")
        if self.lang is not None and self.lang not in LANGS:
            raise InputError(f"unknown language {self.lang!r}: use {', '.join(LANGS)}")

    def to_filter(self, engine) -> queries.SampleFilter:
        """The selection as the review API's filter; every value checked before anything is written."""
        self.check()
        run_id = None
        if self.run is not None:
            found = storage.get_run(engine, self.run)
            if found is None:
                raise InputError(f"no run named {self.run!r}")
            run_id = found.id
        f = queries.SampleFilter(run_id=run_id, lang=self.lang, status=list(STATUSES[self.status]))
        if self.chosen is not None or self.min_scores:
            from datagen.scores.keys import score_filter

            score_filter(engine, f, self.chosen, self.min_scores)
        return f

    def describe(self) -> dict:
        """What the dataset card says was selected."""
        d = {"run": self.run or "all", "status": self.status, "lang": self.lang or "all"}
        if self.chosen is not None:
            d["selection"] = self.chosen
        if self.min_scores:
            d["min_score"] = ", ".join(self.min_scores)
        return d


def selection(engine, *, run: str | None = None, status: str = "accepted", lang: str | None = None) -> queries.SampleFilter:
    """The CLI's options as the filter the API uses."""
    return Selection(run=run, status=status, lang=lang).to_filter(engine)
