"""Deadpool's README "simple case", on cgpool (only the import differs)."""

import cgpool.deadpool as deadpool


def f():
    return 123


if __name__ == "__main__":
    with deadpool.Deadpool() as exe:
        fut = exe.submit(f)
        result = fut.result()

    assert result == 123
    print(result)
