"""Parse a Prometheus text exposition (stdin) with the Prometheus project's own parser
and print its samples as JSON: [{"name", "labels", "value", "family", "type"}, ...].
Exits non-zero if the text does not parse: tests/monitor.rs relies on that."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
print(json.dumps(samples))
