"""The whole input catalogue (tests/catalogue.py): every case keeps the contract, in a child process
that is restarted after a crash or a hang."""

import catalogue


def test_every_case_of_the_catalogue_keeps_the_contract():
    results = catalogue.run_all(catalogue.cases())
    off = [(case, result) for case, result in results if result["outcome"] != "ok"]
    assert len(results) > 500
    assert off == []


def _refuses_without_naming(a):
    raise ValueError("something is wrong")


def test_the_judge_notices_each_way_of_breaking_the_contract():
    # an independent check of the harness: a case known to be refused well, and the verdicts on
    # calls that break the contract in each way
    assert catalogue.run_case("sample_params", "m", "zero", False) == {"outcome": "ok"}
    assert catalogue.run_case("sample_params", "m", "np.int64", True) == {"outcome": "ok"}
    calls = catalogue.calls
    try:
        catalogue.calls = lambda: {"f": (lambda a: 1, {"a": 1}, {"a": "count"})}  # accepts anything
        assert catalogue.run_case("f", "a", "str", False)["outcome"] == "junk-accepted"
        catalogue.calls = lambda: {"f": (_refuses_without_naming, {"a": 1}, {"a": "count"})}
        assert catalogue.run_case("f", "a", "str", False)["outcome"] == "wrong-name"
        catalogue.calls = lambda: {"f": (lambda a: [][a], {"a": 1}, {"a": "count"})}
        assert catalogue.run_case("f", "a", "zero", False)["outcome"] == "other-exception"
        catalogue.calls = lambda: {"f": (lambda a: a * 1.0, {"a": 1}, {"a": "count"})}
        assert catalogue.run_case("f", "a", "np.int64", True)["outcome"] == "ok"
        catalogue.calls = lambda: {"f": (lambda a: type(a).__name__, {"a": 1}, {"a": "count"})}
        assert catalogue.run_case("f", "a", "np.int64", True)["outcome"] == "silently-different"
    finally:
        catalogue.calls = calls
