"""A bounded set of cars, each with the memory a reader of the live topics keeps for it: the first cars seen, a new
car taking the place of the car seen least recently only when that one has been silent for `idle_seconds`.

A sample that stays put, rather than the cars seen last: in a fleet larger than the cap, where every car reports
in turn, forgetting the least recent car at each new one would keep no car long enough for a reading to mature,
and a flood of new car ids would push the real cars out. The judge's lookback and the continual trainer's history
keep their cars by this rule.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class BoundedCars(Generic[T]):
    """At most `max_cars` cars' memories (T), least recently seen first."""

    def __init__(self, max_cars: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_cars < 1:
            raise ValueError(f"at least one car is kept, got {max_cars}")
        self.max_cars = max_cars
        self.idle_seconds = idle_seconds
        self.clock = clock
        self.evicted = 0
        """Cars forgotten to make room for another."""
        self.ignored = 0
        """Records of cars not kept (full of cars that are not idle)."""
        self._cars: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def get(self, car_id: str, new: Callable[[], T]) -> T | None:
        """The car's memory, marked seen now (`new()` for a car not kept yet, when there is room), or None when the
        car is not kept."""
        now = self.clock()
        kept = self._cars.get(car_id)
        if kept is not None:
            self._cars[car_id] = (now, kept[1])
            self._cars.move_to_end(car_id)
            return kept[1]
        if len(self._cars) >= self.max_cars:
            oldest_seen, _ = next(iter(self._cars.values()))
            if now - oldest_seen < self.idle_seconds:
                self.ignored += 1
                return None
            self._cars.popitem(last=False)
            self.evicted += 1
        memory = new()
        self._cars[car_id] = (now, memory)
        return memory

    def items(self) -> Iterator[tuple[str, T]]:
        return ((car_id, memory) for car_id, (_, memory) in self._cars.items())

    def values(self) -> Iterator[T]:
        return (memory for _, memory in self._cars.values())

    def __len__(self) -> int:
        return len(self._cars)
