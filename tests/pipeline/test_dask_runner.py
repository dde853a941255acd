"""beam_pipelines.dask_runner's DoFn life cycle on an in-process dask cluster: setup once
per worker thread (not per partition, i.e. per song), teardown when a DoFn fails and when
the run ends, and the client closed whatever fails."""

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_pipelines import dask_runner

pytestmark = pytest.mark.cluster


class Lifecycle(beam.DoFn):
    """Writes each setup and teardown as a line of `log` (a file: the DoFn is pickled)."""

    def __init__(self, log, fail_on=None):
        self.log, self.fail_on = log, fail_on

    def _note(self, what):
        with open(self.log, "a") as f:
            f.write(f"{what} {id(self)}\n")

    def setup(self):
        self._note("setup")

    def process(self, x):
        if x == self.fail_on:
            raise ValueError(f"bad element {x}")
        yield x * 3

    def teardown(self):
        self._note("teardown")


def notes(log):
    lines = open(log).read().split() if os.path.exists(log) else []
    return lines[0::2], lines[1::2]


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as c:
        yield c


def run(cluster, values, dofn):
    options = PipelineOptions([f"--dask_client_address={cluster.scheduler_address}"])
    p = beam.Pipeline(runner=dask_runner.DaskRunner(), options=options)
    _ = p | beam.Create(values) | beam.ParDo(dofn)
    p.run().wait_until_finish()


def test_setup_runs_once_per_worker_thread_and_teardown_at_the_end(cluster, tmp_path):
    log = str(tmp_path / "log")
    values = list(range(1, 8))  # one partition per element: seven tasks on one thread
    run(cluster, values, Lifecycle(log))
    what, who = notes(log)
    assert what == ["setup", "teardown"] and who[0] == who[1]
    assert not dask_runner._LIVE_DOFNS and not dask_runner._IDLE_DOFNS


def test_a_failing_dofn_is_torn_down(cluster, tmp_path):
    log = str(tmp_path / "log")
    with pytest.raises(Exception, match="bad element 4"):
        run(cluster, [1, 2, 3, 4, 5], Lifecycle(log, fail_on=4))
    what, who = notes(log)
    assert what.count("setup") >= 1 and what.count("setup") == what.count("teardown")
    assert sorted(who[i] for i, w in enumerate(what) if w == "setup") == \
        sorted(who[i] for i, w in enumerate(what) if w == "teardown")


def test_the_client_is_closed_when_building_the_graph_fails(cluster, tmp_path, monkeypatch):
    import dask.distributed as ddist

    made = []

    class RecordingClient(ddist.Client):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    def broken(*a, **kw):
        raise RuntimeError("visitor broke")

    monkeypatch.setattr(ddist, "Client", RecordingClient)
    monkeypatch.setattr(dask_runner, "_BagVisitor", broken)
    with pytest.raises(RuntimeError, match="visitor broke"):
        run(cluster, [1, 2], Lifecycle(str(tmp_path / "log")))
    assert len(made) == 1 and made[0].status == "closed"
