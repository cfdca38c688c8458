import pytest

from itercomp.errors import ItercompError
from itercomp.records import Candidate, Ranking


def _ranking(order, ranks=None):
    candidates = [Candidate(i, "g", 0, f"{i}.png", "x") for i in ("a", "b", "c")]
    return Ranking("p1", "a red circle and a blue square", "attribute_binding", candidates, order, "alice", ranks=ranks)


def test_strict_order_gives_every_pair():
    assert _ranking(["b", "a", "c"]).pairs() == [("b", "a"), ("b", "c"), ("a", "c")]


def test_ties_give_no_pair_and_survive_a_round_trip():
    ranking = _ranking(["b", "a", "c"], ranks=[1, 1, 2])
    assert ranking.pairs() == [("b", "c"), ("a", "c")]
    assert Ranking.from_dict(ranking.to_dict()).pairs() == ranking.pairs()


@pytest.mark.parametrize("order,ranks", [(["a", "a", "c"], None), (["a", "b"], None), (["a", "b", "c"], [2, 1, 3])])
def test_invalid_rankings_are_refused(order, ranks):
    with pytest.raises(ItercompError):
        _ranking(order, ranks)
