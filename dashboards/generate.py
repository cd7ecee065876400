#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder (the JSON is checked in;
deploy/check fails when it is stale: run `python3 dashboards/generate.py`).
Every panel queries metrics credwatch exports (README, "Metrics")."""
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr, legend, ref="A"):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(pid, title, x, y, w, h, targets, unit="short", kind="timeseries",
          description="", thresholds=None, stack=False, max_=None):
    steps = [{"color": "green", "value": None}]
    for value, color in thresholds or []:
        steps.append({"color": color, "value": value})
    defaults = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}
    if max_ is not None:
        defaults["max"] = max_
    if kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        }
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [
            target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    return p


def overview():
    r = "[$__rate_interval]"
    panels = [
        panel(1, "Events judged /s by kind, protocol, result", 0, 0, 12, 8,
              [(f"sum by (kind, protocol, result) (rate(credwatch_events_total{r}))",
                "{{kind}} {{protocol}} {{result}}")], unit="ops", stack=True,
              description="Logins, submissions and bounces judged per second."),
        panel(2, "Rejected messages /s by reason", 12, 0, 12, 8,
              [(f"sum by (reason) (rate(credwatch_events_rejected_total{r}))", "{{reason}}")],
              unit="ops", thresholds=[(1, "orange"), (10, "red")],
              description="Copied to the dead-letter topic with the reason in a header."),
        panel(3, "Findings /15m by detector and action", 0, 8, 12, 8,
              [("sum by (detector, action) (increase(credwatch_detections_total[15m]))",
                "{{detector}} {{action}}")], stack=True,
              description="lock, alert, or joined (added to an open incident)."),
        panel(4, "Locks vs alerts emitted /15m", 12, 8, 8, 8,
              [("sum by (action) (increase(credwatch_actions_emitted_total[15m]))", "{{action}}")],
              thresholds=[(50, "red")],
              description="Above 50 locks in 15 minutes, CredwatchLockSpike fires."),
        panel(5, "Breaker", 20, 8, 4, 8,
              [("max(credwatch_breaker_open)", "open")], kind="stat",
              thresholds=[(1, "red")],
              description="1: automatic locking suspended; locks are sent as alerts."),
        panel(6, "Webhook deliveries /s by outcome", 0, 16, 12, 8,
              [(f"sum by (outcome) (rate(credwatch_webhook_deliveries_total{r}))", "{{outcome}}")],
              unit="ops"),
        panel(7, "Webhook request time p50 / p99", 12, 16, 12, 8,
              [(f"histogram_quantile(0.5, sum by (le) (rate(credwatch_webhook_delivery_duration_seconds_bucket{r})))", "p50"),
               (f"histogram_quantile(0.99, sum by (le) (rate(credwatch_webhook_delivery_duration_seconds_bucket{r})))", "p99")],
              unit="s", thresholds=[(1, "orange"), (10, "red")]),
        panel(8, "Decision time p50 / p99 (receipt to decision)", 0, 24, 12, 8,
              [(f"histogram_quantile(0.5, sum by (le) (rate(credwatch_event_decision_duration_seconds_bucket{r})))", "p50"),
               (f"histogram_quantile(0.99, sum by (le) (rate(credwatch_event_decision_duration_seconds_bucket{r})))", "p99")],
              unit="s", thresholds=[(0.05, "orange"), (1, "red")]),
        panel(9, "Consumer lag by partition", 12, 24, 12, 8,
              [("sum by (topic, partition) (credwatch_consumer_lag_messages)", "{{topic}}[{{partition}}]")],
              thresholds=[(10000, "orange"), (100000, "red")],
              description="Messages between the consumer's position and the end of each assigned partition."),
        panel(10, "Accounts tracked vs cap", 0, 32, 12, 8,
              [("sum(credwatch_accounts_tracked)", "accounts tracked"),
               ("max(credwatch_state_capacity{keyed_by=\"account\"})", "cap per instance")],
              description="The largest per-account table; above 90 % of the cap, CredwatchStateNearCap fires."),
        panel(11, "State restore time after an assignment", 12, 32, 6, 8,
              [(f"max(rate(credwatch_state_restore_duration_seconds_sum[1h]) / clamp_min(rate(credwatch_state_restore_duration_seconds_count[1h]), 1e-9))", "mean")],
              unit="s", kind="stat", thresholds=[(30, "orange"), (300, "red")]),
        panel(12, "Partitions assigned / restoring", 18, 32, 6, 8,
              [("sum(credwatch_partitions_assigned)", "assigned"),
               ("sum(credwatch_state_restoring_partitions)", "restoring")], kind="stat"),
        panel(13, "Event lag p99 (message timestamp to decision)", 0, 40, 12, 8,
              [(f"histogram_quantile(0.99, sum by (le) (rate(credwatch_event_lag_seconds_bucket{r})))", "p99")],
              unit="s", thresholds=[(1, "orange"), (60, "red")]),
        panel(14, "GeoIP cache hit ratio", 12, 40, 6, 8,
              [("avg(credwatch_geoip_cache_hit_ratio)", "hit ratio")],
              unit="percentunit", kind="gauge", max_=1),
        panel(15, "State evictions /15m by cause", 18, 40, 6, 8,
              [("sum by (cause) (increase(credwatch_state_evictions_total[15m]))", "{{cause}}")]),
        panel(16, "Log lines /s by outcome (kafka.log_topics)", 0, 48, 12, 8,
              [(f"sum by (outcome) (rate(credwatch_log_lines_total{r}))", "{{outcome}}")],
              unit="ops", stack=True,
              description="used: went into an event; the rest say why a line gave none (docs/maillog.md). Above half unreadable, CredwatchLogLinesUnreadable fires."),
        panel(17, "Log joins held", 12, 48, 12, 8,
              [("sum(credwatch_log_joins_held)", "held")],
              description="Messages, sessions and waiting failures waiting for the rest of their lines (at most maillog.max_joins per partition)."),
        panel(18, "Policy requests /s by server and verdict", 0, 56, 12, 8,
              [(f"sum by (server, verdict) (rate(credwatch_policy_requests_total{r}))", "{{server}} {{verdict}}")],
              unit="ops", stack=True,
              description="Dovecot's auth policy and Postfix's policy delegation: allow, refuse (a locked account), tarpit, report, refuse_sender / would_refuse_sender (postfix_policy.sender_check). If the mail servers stop asking, CredwatchPolicyUnasked fires."),
        panel(19, "Policy answer p99 by server", 12, 56, 6, 8,
              [(f"histogram_quantile(0.99, sum by (le, server) (rate(credwatch_policy_request_duration_seconds_bucket{r})))", "{{server}}")],
              unit="s", thresholds=[(0.01, "orange"), (0.05, "red")],
              description="Every login and message waits for this answer. Above 50 ms for 10 minutes, CredwatchPolicySlow fires."),
        panel(20, "Accounts refused now / lock view caught up", 18, 56, 6, 8,
              [("max(credwatch_locks_enforced)", "locked"),
               ("min(credwatch_lock_view_caught_up)", "caught up")], kind="stat",
              description="Accounts the policy servers refuse (the lock view, from the actions topic); caught up is 1 once the topic has been read to its end."),
        panel(21, "Policy errors and lost events /5m", 0, 64, 12, 8,
              [("sum by (server, reason) (increase(credwatch_policy_errors_total[5m])) or on() vector(0)", "{{server}} {{reason}}"),
               ("sum by (server, outcome) (increase(credwatch_policy_events_total{outcome=~\"dropped|failed|invalid\"}[5m])) or on() vector(0)", "events {{server}} {{outcome}}")],
              description="Requests that broke a protocol or lacked the secret (by reason), and events the servers could not hand to Kafka."),
    ]
    return {
        "uid": "credwatch-overview",
        "title": "credwatch overview",
        "description": "Stolen-password detection: events, findings, actions, webhooks, Kafka and state.",
        "tags": ["credwatch", "mail", "security"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": []},
        "templating": {"list": [{
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": "default", "value": "default"},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
        }]},
        "panels": panels,
    }


def main():
    d = overview()
    (HERE / "credwatch-overview.json").write_text(json.dumps(d, indent=2) + "\n")


if __name__ == "__main__":
    main()
