"""What the pipeline hands every runner, checked against what the Java runners accept:
options a Java job server can read, and metric results as the Spark runner reports them."""

import logging

from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import sdk_worker_main

from beam_pipelines import preprocess

# org.apache.beam.sdk.options.SdkHarnessOptions.LogLevel: the names a Java job server
# deserialises; any other name fails the job before it starts.
JAVA_LOG_LEVELS = {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"}


def _harness_level(options: PipelineOptions) -> str:
    return options.get_all_options()["default_sdk_harness_log_level"]


def test_sdk_harness_log_level_is_a_name_both_harnesses_know():
    level = _harness_level(preprocess.pipeline_options([]))
    assert level in JAVA_LOG_LEVELS
    # ... and the Python harness reads it as the warning level, not as unknown (INFO).
    assert sdk_worker_main._get_log_level_from_options_dict(
        {"default_sdk_harness_log_level": level}) == logging.WARNING


def test_a_log_level_given_on_the_command_line_is_kept():
    options = preprocess.pipeline_options(["--default_sdk_harness_log_level=ERROR"])
    assert _harness_level(options) == "ERROR"


NAMESPACE = "beam_pipelines.transforms.ProcessSongs"  # as Metrics.counter(cls, ...) names it


def _counter(step: str, name: str, committed, attempted, namespace=NAMESPACE) -> MetricResult:
    return MetricResult(MetricKey(step, MetricName(namespace, name)), committed, attempted)


def test_counter_totals_use_attempted_where_committed_is_missing():
    # The Spark runner leaves committed None; the embedded runner fills both.
    counters = [_counter("a", "songs_written", None, 3), _counter("b", "songs_written", None, 4),
                _counter("a", "songs_failed", 2, 5), _counter("a", "chunks", None, None),
                _counter("a", "metric:element_count:v1", None, 9, namespace="beam")]
    assert preprocess.counter_totals(counters) == {"songs_written": 7, "songs_failed": 2}


def test_metrics_report_survives_a_runner_without_committed_values(caplog):
    class Result:
        def metrics(self):
            class Query:
                def query(self):
                    return {"counters": [_counter("s", "songs_in", None, 11)]}
            return Query()

    with caplog.at_level(logging.INFO, logger="wavegen.pipeline"):
        preprocess._log_metrics(Result())
    assert "songs_in=11" in caplog.text


FAILED_JOB = """Pipeline BeamApp-x failed in state FAILED: java.lang.RuntimeException: Error \
received from SDK harness for instruction 1: Traceback (most recent call last):
  File "apache_beam/runners/common.py", line 1512, in process
  File "/shadow/wavegen/__init__.py", line 1, in <module>
    raise ImportError('wavegen is broken')
ImportError: wavegen is broken [while running 'Songs/Map(decode)']

\tat org.apache.beam.runners.fnexecution.control.FnApiControlClient.onNext(X.java:1)
"""


def test_a_failed_job_is_reported_by_its_innermost_exception_on_one_line():
    line = preprocess._error_with_cause(RuntimeError(FAILED_JOB))
    assert line == ("RuntimeError: job BeamApp-x FAILED: ImportError: wavegen is broken "
                    "[while running 'Songs/Map(decode)']")
    # Other errors are kept as they are, on one line.
    assert preprocess._error_with_cause(ValueError("a\nb")) == "ValueError: a b"
