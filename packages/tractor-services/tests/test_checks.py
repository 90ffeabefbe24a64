"""The one positive-number check (feedbus and tractor-sampler use it too)."""

import math

import pytest

from tractor_services.checks import check_positive


@pytest.mark.parametrize('value', [1, 0.25, 1e9])
def test_positive_finite_numbers_pass_as_given(value):
    assert check_positive('rate', value) is value


@pytest.mark.parametrize(
    'value, match',
    [
        (0, r'rate=0 must be a positive number'),
        (-1.5, r'rate=-1.5 must be a positive number'),
        (math.nan, r'rate=nan must be a positive number'),
        (math.inf, r'rate=inf must be a positive number, and finite'),
        (True, r'rate=True must be a positive number, not a bool'),
        ('1.5', r"rate='1.5' must be a positive number, not a str"),
        (None, r'rate=None must be a positive number, not a NoneType'),
    ],
)
def test_anything_else_is_refused_in_one_line_naming_it(value, match):
    with pytest.raises(ValueError, match=match) as info:
        check_positive('rate', value)
    assert '\n' not in str(info.value)


def test_none_when_allowed_and_the_unit_in_the_message():
    assert check_positive('timeout', None, allow_none=True) is None
    with pytest.raises(
        ValueError, match='timeout=0 must be a positive number of seconds'
    ):
        check_positive('timeout', 0, unit='seconds', allow_none=True)


def test_one_peer_gone_makes_a_group_of_peer_gones_one():
    """Two watchers of one peer noticing it gone at once give one PeerGone;
    a group with any other error goes out as it is."""
    import builtins

    from tractor_services import PeerGone, one_peer_gone

    group = getattr(builtins, 'BaseExceptionGroup', None)
    if group is None:  # Python 3.10: trio's backport
        from exceptiongroup import BaseExceptionGroup as group
    a, b = PeerGone('a'), PeerGone('b')
    with pytest.raises(PeerGone) as info:
        with one_peer_gone():
            raise group('both', [a, b])
    assert info.value is a
    other = ValueError('x')
    with pytest.raises(group):
        with one_peer_gone():
            raise group('mixed', [a, other])
