"""The load-test script with small numbers: concurrent clients all complete, get their own results, no leak."""

from bench.load_test import main


def test_small_load(tmp_path):
    assert main(["--clients", "2", "--requests", "2", "--json", str(tmp_path / "load.json")]) == 0
