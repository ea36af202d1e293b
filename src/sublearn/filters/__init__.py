"""Filters that decide which teacher samples become training data.

``numbers`` checks the number-list format, ``banned`` holds the culturally loaded
numbers of the misalignment experiments, ``leakage`` catches replies that name the
trait, and ``stage`` runs them over a JSONL dataset and writes a report.
"""

from sublearn.filters.banned import banned_numbers
from sublearn.filters.leakage import leaks
from sublearn.filters.numbers import ParseResult, Rejection, parse_numbers
from sublearn.filters.stage import (
    DatasetFormatError,
    FilterConfig,
    FilterReport,
    NotEnoughRecordsError,
    filter_dataset,
    subsample,
)

__all__ = [
    "DatasetFormatError",
    "FilterConfig",
    "FilterReport",
    "NotEnoughRecordsError",
    "ParseResult",
    "Rejection",
    "banned_numbers",
    "filter_dataset",
    "leaks",
    "parse_numbers",
    "subsample",
]
