#!/usr/bin/env python3
"""Parses an OpenMetrics exposition (warren's GET /metrics) read from stdin with the
Prometheus project's own parser, and prints it as JSON for tests/e2e/metrics.rs:

    [{"name": FAMILY, "type": TYPE, "samples": [{"name": N, "labels": {...}, "value": V}]}]

Family names are as OpenMetrics has them (a counter's without `_total`; its samples keep it).
Text that does not parse (a missing `# EOF`, a bad histogram, a clashing name...) exits 1
with the parser's message on stderr. Needs `prometheus_client` for this interpreter
(Debian: python3-prometheus-client; scripts/test.sh installs it).
"""

import json
import math
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError as e:
    sys.exit(
        f"metrics_parse.py: cannot import prometheus_client ({e}); "
        "install python3-prometheus-client"
    )


def value(v):
    """A sample value JSON can carry: NaN and infinities as strings."""
    v = float(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return v


def main():
    text = sys.stdin.read()
    try:
        families = [
            {
                "name": f.name,
                "type": f.type,
                "samples": [
                    {"name": s.name, "labels": dict(s.labels), "value": value(s.value)}
                    for s in f.samples
                ],
            }
            for f in text_string_to_metric_families(text)
        ]
    except Exception as e:  # the parser raises ValueError and friends
        sys.exit(f"metrics_parse.py: not valid OpenMetrics: {type(e).__name__}: {e}")
    json.dump(families, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
