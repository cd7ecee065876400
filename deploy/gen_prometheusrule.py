#!/usr/bin/env python3
"""Prints deploy/base/prometheusrule.yaml: the PrometheusRule object that
carries the groups of deploy/prometheus/credwatch.rules.yml (the source).
deploy/check fails when the checked-in file differs; `deploy/check --fix`
rewrites it."""
import pathlib

root = pathlib.Path(__file__).resolve().parent
rules = (root / "prometheus" / "credwatch.rules.yml").read_text()
body = [l for l in rules.splitlines() if not l.startswith("#")]
print("# Generated from deploy/prometheus/credwatch.rules.yml by deploy/check --fix; do not edit.")
print("apiVersion: monitoring.coreos.com/v1")
print("kind: PrometheusRule")
print("metadata:")
print("  name: credwatch")
print("spec:")
for line in body:
    print(("  " + line) if line.strip() else "")
