"""Progress of a long step as log lines in the Dagster UI (every `step` of the total)."""


import time


class LogProgress:
    def __init__(self, log, total: int, what: str, step: float = 0.2, unit: str = "rows"):
        self.log, self.total, self.what, self.step, self.unit = log, max(total, 1), what, step, unit
        self.done, self.next_mark, self.t0 = 0, step, time.perf_counter()

    def __call__(self, n: int) -> None:
        self.done += n
        if self.done / self.total >= self.next_mark or self.done >= self.total:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            self.log.info(f"{self.what}: {self.done}/{self.total} {self.unit} "
                          f"({self.done / self.total:.0%}, {rate:,.0f} {self.unit}/s)")
            while self.next_mark <= self.done / self.total:
                self.next_mark += self.step
