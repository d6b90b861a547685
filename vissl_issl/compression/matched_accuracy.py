"""Rate at matched accuracy: the cheapest operating point of a codec sweep that reaches a target.

A codec swept over qualities gives points (bits per image, downstream accuracy). Accuracy is not
monotone in quality (probe noise, and a little compression can even help), so the search does not
assume any order: among all points whose accuracy reaches ``target - tolerance`` it returns the one
with the fewest bits (the first in the given order on a tie), or None when no point reaches it.
A match at the sweep's cheapest point is at its edge: the codec might reach the target with fewer
bits than any setting tried, so its matched rate is an upper bound, and reports say so.
"""

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence


@dataclass(frozen=True)
class RatePoint:
    bits: float  # per image
    accuracy: float  # percent
    label: str = ""  # e.g. "jpeg q=30"


def cheapest_reaching(points: Iterable[RatePoint], target: float, tolerance: float = 0.0) -> Optional[RatePoint]:
    """The point with the fewest bits among those with ``accuracy >= target - tolerance``."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance}")
    reaching = [point for point in points if point.accuracy >= target - tolerance]
    return min(reaching, key=lambda point: point.bits) if reaching else None


def at_edge(match: Optional[RatePoint], points: Sequence[RatePoint]) -> bool:
    """Whether ``match`` is the cheapest point of the sweep ``points``."""
    return match is not None and match.bits <= min(point.bits for point in points)


def by_rate(points: Sequence[RatePoint]) -> List[RatePoint]:
    """The points sorted by bits (then accuracy), for plotting a rate-accuracy curve."""
    return sorted(points, key=lambda point: (point.bits, point.accuracy))


def describe_match(
    codec: str, match: Optional[RatePoint], target: float, best: Optional[RatePoint], edge: bool = False
) -> str:
    """One line: the matched rate (flagged when at the sweep's edge, see :func:`at_edge`), or that
    the codec never reaches ``target`` (with its best point)."""
    if match is not None:
        line = f"{codec}: {match.bits:.1f} bits/image reach {match.accuracy:.2f}% >= {target:.2f}% ({match.label})"
        return line + (", the cheapest setting tried: the codec's matched rate may be lower" if edge else "")
    if best is None:
        return f"{codec}: no points"
    return (
        f"{codec}: never reaches {target:.2f}% (best {best.accuracy:.2f}% at {best.bits:.1f} bits/image, {best.label})"
    )
