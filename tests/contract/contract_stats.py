"""Per-operation status counts of the contract run, printed in the pytest terminal summary."""

from collections import Counter, defaultdict

STATS: dict[str, Counter] = defaultdict(Counter)
