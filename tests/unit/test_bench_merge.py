"""`python -m bench --only NAME` replaces that suite's section and summary lines only."""

from __future__ import annotations

from bench.merge import merge_text

ORDER = ("throughput", "memory", "scale_out")

BEFORE = """# Benchmarks

Written by `make bench` (`python -m bench`) in 20 min.

## Targets at a glance

- Throughput vs the limit (target >= 0.8): SQLite 0.34, PostgreSQL 0.24.
- Memory: peak RSS 107 MB.

## 1. Throughput against the limit

Command: `python -m bench --only throughput` (197 s)

| a | b |
|---|---|
| 1 | 2 |

## 4. Memory and scale

Command: `python -m bench --only memory` (229 s)

Old memory text.
"""


def section(title: str, name: str, body: str) -> str:
    return f"## {title}\n\nCommand: `python -m bench --only {name}` (9 s)\n\n{body}\n"


def test_a_suite_run_alone_replaces_its_section_and_line_and_keeps_the_others() -> None:
    after = merge_text(
        BEFORE,
        {"memory": section("4. Memory and scale", "memory", "New memory text.")},
        {"memory": ["- Memory: peak RSS 99 MB."]},
        order=ORDER,
    )
    assert "New memory text." in after and "Old memory text." not in after
    assert "- Memory: peak RSS 99 MB." in after and "107 MB" not in after
    assert "- Throughput vs the limit (target >= 0.8): SQLite 0.34" in after
    assert "| 1 | 2 |" in after  # the other section, untouched
    assert after.startswith("# Benchmarks\n\nWritten by `make bench`")
    assert after.index("- Throughput") < after.index("- Memory")  # lines keep their place
    assert after.index("## 1.") < after.index("## 4.")


def test_a_new_suite_goes_in_suite_order_and_a_failed_one_is_replaced() -> None:
    after = merge_text(
        BEFORE,
        {"scale_out": section("9. Scale-out", "scale_out", "Could not run.")},
        {"scale_out": ["- scale_out: could not run (see its section)."]},
        order=ORDER,
    )
    assert after.index("## 4. Memory") < after.index("## 9. Scale-out")
    again = merge_text(
        after,
        {"scale_out": section("9. Scale-out", "scale_out", "Measured.")},
        {"scale_out": ["- Scale-out (RabbitMQ, PostgreSQL): 1/2/4 processes ..."]},
        order=ORDER,
    )
    assert "Could not run." not in again and "Measured." in again
    assert "could not run" not in again
    assert again.count("## 9. Scale-out") == 1
    assert "- Memory: peak RSS 107 MB." in again
