"""Beam's DaskRunner, with the fixes the wavegen pipeline needs to run on it correctly.

    --runner=beam_pipelines.dask_runner.DaskRunner --dask_client_address=tcp://HOST:8786

Beam 2.77's `apache_beam.runners.dask.DaskRunner` is a proof of concept that gets this
pipeline wrong in four ways, each fixed here (everything else is Beam's own):

1. Multi-output ParDos (`with_outputs`): every consumer of any output got *all* of the
   producer's elements, whatever their tag. Here each PCollection gets its own bag,
   filtered by tag.
2. Only the last transform's bag was computed: a pipeline with several sinks (ours writes
   shards and two reports) silently ran one branch. Here every leaf is computed, in one
   graph, so shared work runs once.
3. Side inputs were materialised by computing their bag again *inside* the consuming task
   (re-running the upstream DoFns, side effects included). Here a side input is a dask
   `Item` the consuming task depends on: computed once, on the cluster, then passed in.
4. Outputs emitted in `finish_bundle` were dropped. Here they are kept.

A DoFn is set up once per worker thread and reused by the partitions that follow (Beam's
called setup and teardown for every partition, i.e. every song); it is torn down when it
fails and, on every worker, when the run ends. The client is closed whatever fails.

Like Beam's, it runs batch pipelines in the global window (elements carry no windows or
timestamps between transforms), without state, timers or metrics.

Fewer tasks: Create puts each element in its own partition (one task per song
balances the heavy work; Beam's default of 128 elements per partition would put a small
corpus in one task on one worker) unless --dask_npartitions / --dask_partition_size say
otherwise; a ParDo's outputs and GroupByKey's shuffle then use a few partitions (twice
the cluster's threads) for the many small elements that follow.
"""

from __future__ import annotations

import collections
import functools
import threading
import uuid

from apache_beam import pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import Receiver
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask import transform_evaluator as te
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.runner import PipelineState


class _Create(te.Create):
    def apply(self, input_bag, side_inputs=None):
        if not self.bag_kwargs.get("npartitions") and not self.bag_kwargs.get("partition_size"):
            import dask.bag as db

            values = list(self.transform.values)
            return db.from_sequence(values, partition_size=1) if values else \
                db.from_sequence([], npartitions=1)
        return super().apply(input_bag, side_inputs)


class _ListReceiver(Receiver):
    """Collects (tag, element) pairs; tag None is the main output."""

    def __init__(self, tag, out):
        self.tag = tag
        self.out = out

    def receive(self, windowed_value):
        self.out.append((self.tag, windowed_value.value))


class _Receivers(dict):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def __missing__(self, tag):
        self[tag] = _ListReceiver(tag, self.out)
        return self[tag]


def _map_partitions(func, bag, items, label):
    """func(partition, *items) per partition of `bag`, each task depending on the items'
    single keys. (Bag.map_partitions given Items copies their whole graphs, under new
    names, into the result: the upstream DoFns would run again, once per copy.)"""
    import uuid

    from dask.bag import Bag
    from dask.highlevelgraph import HighLevelGraph

    name = f"{label.replace('/', '.')}-{uuid.uuid4().hex}"
    layer = {(name, i): (func, (bag.name, i), *[item.key for item in items])
             for i in range(bag.npartitions)}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[bag, *items])
    return Bag(graph, name, bag.npartitions)


def _run_bundle(items, *side_values, fn, run_id, label, args, kwargs, window_fn,
                side_specs):
    """One dask partition through a DoFn: start, process, finish; the DoFn is set up once
    and reused by the later partitions on this worker (see `_take_dofn`), torn down when
    it fails or when the run ends (`_tear_down_run`)."""
    from apache_beam import DoFn
    from apache_beam.runners.common import (DoFnContext, DoFnInvoker, DoFnSignature,
                                            _OutputHandler)
    from apache_beam.transforms.sideinputs import SideInputMap

    out: list = []
    receivers = _Receivers(out)
    side_inputs = [SideInputMap(view_type, view_options,
                                [te.get_windowed_value(v, si_window_fn) for v in values])
                   for (view_type, view_options, si_window_fn), values
                   in zip(side_specs, side_values)]
    handler = _OutputHandler(window_fn=window_fn, main_receivers=receivers[None],
                             tagged_receivers=receivers, per_element_output_counter=None,
                             output_batch_converter=None, process_yields_batches=False,
                             process_batch_yields_elements=False)
    key = (run_id, label)
    dofn, fresh = _take_dofn(key, fn)
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(dofn), handler, context=DoFnContext(label, state=None),
        side_inputs=side_inputs, input_args=list(args), input_kwargs=kwargs,
        user_state_context=None, bundle_finalizer_param=DoFn.BundleFinalizerParam())
    n = 0
    try:
        if fresh:
            invoker.invoke_setup()
        invoker.invoke_start_bundle()
        for item in items:
            invoker.invoke_process(te.get_windowed_value(item, window_fn))
            n += 1
        invoker.invoke_finish_bundle()  # before collecting: its outputs count too
    except BaseException:
        _tear_down(key, dofn)  # a failed DoFn is not reused
        raise
    _give_back_dofn(key, dofn)
    _count_on_worker(label, n)
    return out


# The DoFns set up in this worker process, per (run, transform): idle ones wait for the
# next partition, so setup runs once per worker thread, not once per partition (per song).
_DOFN_LOCK = threading.Lock()
_IDLE_DOFNS: dict[tuple[str, str], list] = collections.defaultdict(list)
_LIVE_DOFNS: dict[tuple[str, str], list] = collections.defaultdict(list)


def _take_dofn(key, fn):
    """An idle, set-up DoFn for `key`, or `fn` (this task's copy) to set up: (dofn,
    needs_setup)."""
    with _DOFN_LOCK:
        if _IDLE_DOFNS[key]:
            return _IDLE_DOFNS[key].pop(), False
        _LIVE_DOFNS[key].append(fn)
        return fn, True


def _give_back_dofn(key, dofn) -> None:
    with _DOFN_LOCK:
        _IDLE_DOFNS[key].append(dofn)


def _tear_down(key, dofn) -> None:
    """Tears `dofn` down (best effort, as Beam's teardown is) and forgets it."""
    with _DOFN_LOCK:
        if dofn in _LIVE_DOFNS[key]:
            _LIVE_DOFNS[key].remove(dofn)
        if dofn in _IDLE_DOFNS[key]:
            _IDLE_DOFNS[key].remove(dofn)
    try:
        dofn.teardown()
    except Exception:  # teardown must not hide the error that brought us here
        pass


def _tear_down_run(run_id: str) -> int:
    """Tears down every DoFn this worker set up for run `run_id` (run on each worker when
    the run ends); returns how many."""
    with _DOFN_LOCK:
        keys = [k for k in _LIVE_DOFNS if k[0] == run_id]
        dofns = [(k, d) for k in keys for d in _LIVE_DOFNS[k]]
    for key, dofn in dofns:
        _tear_down(key, dofn)
    with _DOFN_LOCK:
        for key in keys:
            _IDLE_DOFNS.pop(key, None)
            _LIVE_DOFNS.pop(key, None)
    return len(dofns)


def _count_on_worker(label, n):
    """Elements each transform processed on this worker: `dask_worker.beam_elements`
    (read with `Client.run`), the record of where the work ran."""
    from collections import Counter

    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a dask worker
        return
    if not hasattr(worker, "beam_elements"):
        worker.beam_elements = Counter()
    worker.beam_elements[label] += n


def _whole(bag):
    """A bag as one value (a dask Item) that a task can depend on."""
    return bag.reduction(list, lambda parts: [x for part in parts for x in part])


class DaskRunner(beam_dask.DaskRunner):
    """Executes a pipeline on a dask.distributed cluster (see the module docstring)."""

    def run_pipeline(self, pipeline, options):
        import dask.distributed as ddist

        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(
            drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        client = ddist.Client(**dask_options)
        run_id = uuid.uuid4().hex
        try:
            pipeline.replace_all(dask_overrides())
            threads = sum(w["nthreads"]
                          for w in client.scheduler_info()["workers"].values())
            visitor = _BagVisitor(bag_kwargs, max(1, 2 * threads), run_id)
            pipeline.visit(visitor)
            leaves = [bag for pcoll, bag in visitor.bags.items()
                      if pcoll not in visitor.consumed]
            # No graph optimisation: its task fusion recomputes shared partitions (a DoFn
            # with side effects ran once per consumer).
            futures = client.compute(leaves, optimize_graph=False)
        except BaseException:
            client.close()
            raise
        return _Result(client, futures, run_id)


class _Result(beam_dask.DaskRunnerResult):
    def __init__(self, client, futures, run_id):
        super().__init__(client, futures)
        self.run_id = run_id

    def wait_until_finish(self, duration=None):
        try:
            return super().wait_until_finish(duration)
        finally:
            if self._state in (PipelineState.DONE, PipelineState.FAILED):
                try:
                    self._tear_down_dofns()
                finally:
                    self.client.close()

    def _tear_down_dofns(self) -> None:
        """Each worker's DoFns of this run get their teardown (best effort)."""
        try:
            self.client.run(_tear_down_run, self.run_id)
        except Exception:  # a worker that is gone took its DoFns with it
            pass
        _tear_down_run(self.run_id)  # an in-process (threads) cluster


class _BagVisitor(PipelineVisitor):
    """Beam transforms -> dask bags, one bag per PCollection."""

    def __init__(self, bag_kwargs, shuffle_partitions, run_id):
        self.run_id = run_id
        self.bag_kwargs = bag_kwargs
        self.shuffle_partitions = shuffle_partitions
        self.bags: dict = {}
        self.consumed: set = set()

    def visit_transform(self, node):
        inputs = [p for p in node.inputs if not isinstance(p, pvalue.PBegin)]
        self.consumed.update(inputs)
        sides = list(node.side_inputs)
        self.consumed.update(si.pvalue for si in sides)
        in_bags = [self.bags[p] for p in inputs]
        cls = node.transform.__class__
        if cls is te.apache_beam.ParDo:
            self._pardo(node, in_bags[0], sides)
            return
        if cls is te._GroupByKeyOnly:
            self.bags[node.outputs[None]] = self._group(in_bags[0])
            return
        op_class = {te._Create: _Create}.get(cls) or te.TRANSLATIONS.get(cls, te.NoOp)
        op = op_class(node, bag_kwargs=self.bag_kwargs)
        if isinstance(op, te.Flatten):
            bag = op.apply(in_bags)
        else:
            bag = op.apply(in_bags[0] if in_bags else None)
        for out in node.outputs.values():
            self.bags[out] = bag

    def _pardo(self, node, in_bag, sides):
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        main_input = next(iter(node.main_inputs.values()))
        window_fn = getattr(getattr(main_input, "windowing", None), "windowfn", None)
        side_specs = [(type(si), si._view_options(), si._window_mapping_fn) for si in sides]
        side_items = [_whole(self.bags[si.pvalue]) for si in sides]
        bundle = functools.partial(_run_bundle, fn=transform.fn, run_id=self.run_id,
                                   label=node.full_label,
                                   args=args, kwargs=kwargs, window_fn=window_fn,
                                   side_specs=side_specs)
        tagged = _map_partitions(bundle, in_bag, side_items, node.full_label)
        if tagged.npartitions > self.shuffle_partitions:
            # One task per input element (a song) balances the heavy work; after it, the
            # many small elements go on in a few partitions (fewer, larger tasks).
            tagged = tagged.repartition(self.shuffle_partitions)
        for tag, out in node.outputs.items():  # the main output's tag is None
            self.bags[out] = tagged.filter(_has_tag(tag)).map(_value)

    def _group(self, bag):
        """GroupByKey: few partitions in the shuffle (one per song would make a task
        shuffle of thousands of tiny tasks)."""
        n = self.shuffle_partitions
        if bag.npartitions > n:
            bag = bag.repartition(n)
        return bag.groupby(_key, npartitions=n, shuffle="tasks").map(_key_and_values)


def _key(item):
    return item[0]


def _key_and_values(item):
    key, values = item
    return key, [te.defenestrate(v[1]) for v in values]


def _has_tag(tag):
    def keep(item):
        return item[0] == tag
    return keep


def _value(item):
    return item[1]
