"""The run directory: its paths (`RunDir`), the typed summary, metrics.jsonl and the resume plan.

Checkpoints (`detect.run.checkpoints`) need torch and are imported from there; everything here
imports no torch, so `detect.runs`, `detect.report` and the config resolvers stay fast.
"""

from detect.run.paths import RunDir, SweepDir, TestDir
from detect.run.records import MetricsLog, RunMetrics, json_safe, read_metrics, write_json_atomic
from detect.run.summary import RunSummary, Status, SummaryFile, read_summary

__all__ = ["MetricsLog", "RunDir", "RunMetrics", "RunSummary", "Status", "SummaryFile", "SweepDir", "TestDir",
           "json_safe", "read_metrics", "read_summary", "write_json_atomic"]
