import pytest

from probe.sizes import GIB, MIB, format_size, parse_size, tier_label


@pytest.mark.parametrize("text", ["8GiB", "8GB", "8192MiB", "8", "8 gib", "8g", 8, "8.0"])
def test_every_spelling_of_eight_gib_is_the_same_budget(text):
    assert parse_size(text) == 8 * GIB


def test_fractions_and_small_units():
    assert parse_size("0.5GiB") == 512 * MIB
    assert parse_size("1536MB") == 1536 * MIB
    assert parse_size("4096B") == 4096


@pytest.mark.parametrize("text", ["eight", "8XB", "", "GiB", "-8GiB", "8 GiB extra", "0", True])
def test_unknown_size_strings_are_rejected_with_what_is_accepted(text):
    with pytest.raises(ValueError, match="expected"):
        parse_size(text)


def test_formatting():
    assert format_size(8 * GIB) == "8.00 GiB"
    assert format_size(300 * MIB) == "300.0 MiB"
    assert format_size(None) == "-"
    assert tier_label(80 * GIB) == "80GB"
    assert tier_label(600 * MIB) == "600.0 MiB"
