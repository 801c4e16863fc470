"""Numbers for people: significant figures, percentages, separators; non-finite values and None pass through."""

import math

from crrecon_pipeline.numbers import fmt, pct, percent, rounded, rounded_all, shape_text


def test_rounded_keeps_four_significant_figures_as_numbers():
    assert rounded(0.000012673099263338372) == 1.267e-05
    assert rounded(766.8437042439425) == 766.8 and isinstance(rounded(3), float)
    assert rounded(None) is None and math.isnan(rounded(float("nan"))) and rounded(float("inf")) == float("inf")


def test_percentages_and_text():
    assert percent(0.1923076923076924) == 19.23 and percent(None) is None
    assert pct(0.1923076923076924) == "19.2 %"
    assert fmt(1234567) == "1,234,567" and fmt(0.3225201964378357) == "0.3225" and fmt(True) == "True"
    assert shape_text((3000, 1, 128, 128)) == "3,000 × 1 × 128 × 128"


def test_rounded_all_reaches_into_json():
    assert (rounded_all({"a": [0.123456, {"b": 2.0000001}], "n": 5, "s": "x"})
            == {"a": [0.1235, {"b": 2.0}], "n": 5, "s": "x"})
