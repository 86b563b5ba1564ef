from sgtui.filters import (
    DuplicateFilter,
    EmptyFilter,
    LengthFilter,
    NoiseFilter,
    canned_noise_terms,
    first_failure,
    length_window,
)


def test_length_window_matches_paper_rule():
    # lengths 10, 20, 30: mean 20, population sd 8.165 -> [int(3.67), int(36.33)) = [3, 36)
    assert length_window(["a" * 10, "b" * 20, "c" * 30]) == (3, 36)


def test_negative_lower_bound_means_no_lower_bound():
    lo, hi = length_window(["a", "b" * 40])
    assert lo is None and hi > 40
    f = LengthFilter(lo, hi)
    assert f("") is None


def test_length_filter_bounds_inclusive_lower_strict_upper():
    f = LengthFilter(3, 6)
    assert f("abc") is None
    assert f("abcde") is None
    assert "not under 6" in f("abcdef")
    assert "shorter than 3" in f("ab")


def test_noise_filter_is_case_sensitive_substring():
    f = NoiseFilter.for_task(["input", "\n\n"])
    assert f("the throughput is high") is None
    assert "input" in f("this input is noisy")
    assert f("Input with capital") is None
    assert f("a\n\nb") is not None
    assert f("Sure, I'd be happy to help! Here it is") is not None


def test_canned_terms_loaded_from_data_file():
    terms = canned_noise_terms()
    assert len(terms) == 14 and "Of course!" in terms


def test_empty_filter_strips_first():
    f = EmptyFilter()
    assert f(None) and f("") and f("   \n")
    assert f(" x ") is None


def test_duplicate_filter_compares_stripped():
    d = DuplicateFilter([" hello "])
    assert d("hello") and d("hello  ")
    assert d("other") is None
    d.add("other ")
    assert d(" other")


def test_first_failure_reports_first_filter_in_order():
    fs = [EmptyFilter(), LengthFilter(None, 5), NoiseFilter(("x",))]
    assert first_failure("xxxxxxxx", fs)[0] == "length"
    assert first_failure("xx", fs)[0] == "noise"
    assert first_failure("ab", fs) is None
