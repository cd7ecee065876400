#!/usr/bin/env python3
"""Prints deploy/base/prometheusrule.yaml: the PrometheusRule object that
carries the groups of deploy/prometheus/credwatch.rules.yml (the source).
deploy/check fails when the checked-in file differs; `deploy/check --fix`
rewrites it.

Every alert's runbook_url is an absolute URL of its section in
docs/runbooks.md, so Alertmanager and Grafana can link to it. The rules
file carries the project's own address of that page; where your copy of the
docs is served elsewhere (an internal wiki, a fork), print the rules with
your base instead:

    deploy/gen_prometheusrule.py --runbook-base https://wiki.example.net/credwatch/runbooks
    CREDWATCH_RUNBOOK_BASE=https://... deploy/gen_prometheusrule.py
    deploy/gen_prometheusrule.py --rules --runbook-base ...   # the plain rules file

`--check` verifies that every runbook_url is absolute and that its anchor is
a section of docs/runbooks.md."""
import os
import pathlib
import re
import sys

DEFAULT_BASE = "https://github.com/credwatch/credwatch/blob/main/docs/runbooks.md"

root = pathlib.Path(__file__).resolve().parent
rules = (root / "prometheus" / "credwatch.rules.yml").read_text()
args = sys.argv[1:]
base = os.environ.get("CREDWATCH_RUNBOOK_BASE", DEFAULT_BASE)
if "--runbook-base" in args:
    base = args[args.index("--runbook-base") + 1]
base = base.rstrip("/")
if not re.match(r"^https?://[^/]+", base):
    sys.exit(f"gen_prometheusrule.py: the runbook base must be an http(s) URL, not {base!r}")
rules = rules.replace(DEFAULT_BASE + "#", base + "#")

if "--check" in args:
    page = (root.parent / "docs" / "runbooks.md").read_text()
    # GitHub's anchors: the heading in lower case, without punctuation.
    anchors = {re.sub(r"[^a-z0-9_ -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^##+ (.+)$", page, re.M)}
    urls = re.findall(r'runbook_url: "([^"]*)"', rules)
    bad = [u for u in urls
           if not u.startswith(base + "#") or u.split("#", 1)[1] not in anchors]
    if not urls or bad:
        sys.exit(f"gen_prometheusrule.py: runbook_url without a section in docs/runbooks.md: {bad or 'none found'}")
    print(f"   {len(urls)} runbook URLs, each a section of docs/runbooks.md")
    sys.exit(0)

if "--rules" in args:
    sys.stdout.write(rules)
    sys.exit(0)

body = [l for l in rules.splitlines() if not l.startswith("#")]
print("# Generated from deploy/prometheus/credwatch.rules.yml by deploy/check --fix; do not edit.")
print("apiVersion: monitoring.coreos.com/v1")
print("kind: PrometheusRule")
print("metadata:")
print("  name: credwatch")
print("spec:")
for line in body:
    print(("  " + line) if line.strip() else "")
