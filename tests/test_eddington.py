from hypothesis import given
from hypothesis import strategies as st

from sync.eddington import METRES_PER_KM, METRES_PER_MILE, eddington, eddington_numbers


def test_eddington_counts_days_reaching_the_number():
    km = [50_000, 40_000, 3_000, 3_000, 2_500, 1_000]
    # 3 days of at least 3 km, but not 4 days of at least 4 km.
    assert eddington(km, METRES_PER_KM) == 3


def test_eddington_of_nothing_is_zero():
    assert eddington([], METRES_PER_KM) == 0
    assert eddington([500.0], METRES_PER_KM) == 0


def test_eddington_numbers_in_miles_and_km():
    days = [100 * METRES_PER_MILE] * 70
    assert eddington_numbers(days) == (70, 70)
    days = [80 * METRES_PER_KM] * 100
    assert eddington_numbers(days) == (49, 80)


@given(st.lists(st.floats(min_value=0, max_value=500_000), max_size=300))
def test_eddington_is_the_largest_qualifying_number(days):
    number = eddington(days, METRES_PER_KM)
    reaching = lambda n: sum(1 for d in days if d / METRES_PER_KM >= n)  # noqa: E731
    assert reaching(number) >= number
    assert reaching(number + 1) < number + 1
