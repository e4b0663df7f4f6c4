#!/usr/bin/env python3
"""Renders and lints Ferry's Helm chart with the real Helm library (PyPI helm-python-sdk,
which wraps Helm's Go SDK; no cluster, no helm binary), as `helm template` and
`helm lint --strict` would with the same -f files and --set values.

usage: helm_render.py CHART NAMESPACE [-f FILE]... [--set K=V]...
prints JSON: {"manifests": "<YAML stream>", "lint": {...}, "schema_error": null|"..."}
exit 3 when helm_python is not installed.
"""
import json
import sys

try:
    import helm_python as helm
except ImportError:
    sys.exit(3)
import yaml


def merge(base, overlay):
    """Helm's merge of -f files: maps merge key by key, later files win."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def main(argv):
    chart, namespace, rest = argv[0], argv[1], argv[2:]
    values = {}
    i = 0
    while i < len(rest):
        flag, arg = rest[i], rest[i + 1]
        if flag == "-f":
            with open(arg) as f:
                merge(values, yaml.safe_load(f) or {})
        elif flag == "--set":
            merge(values, helm.parse_set_string(arg))
        else:
            raise SystemExit(f"unknown flag {flag}")
        i += 2
    schema_error = None
    with helm.Chart.load(chart) as c:
        try:
            c.validate_schema(values)
        except Exception as e:  # the schema's own message, for the test to show
            schema_error = str(e)
        manifests = "" if schema_error else "\n---\n".join(
            text for name, text in sorted(c.render(values, name="ferry", namespace=namespace).items())
            if name.endswith(".yaml"))
    lint = helm.lint(chart, values, strict=True, namespace=namespace)
    json.dump({"manifests": manifests, "lint": lint, "schema_error": schema_error}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
