"""A bounded LRU cache of CUDA graphs for one network, keyed by input shape and dtype.

Small-image latency is launch-bound, so ``FastStudent`` replays a captured graph for shapes it
runs often. Unbounded, one graph per shape (each with its static input, output and
intermediates) grows GPU memory over a folder of photos of mixed sizes; so:

- at most ``size`` graphs are kept, the least recently used dropped first;
- a shape is captured the second time it is seen (the first run is plain), or at once when the
  caller says the shape is fixed (the tile shape of a tiled run); the shapes seen once are
  remembered in a bounded LRU too;
- all graphs capture into one shared memory pool (``graph_pool_handle``): safe because replays
  are serialized by the cache's lock on one stream, and each graph's intermediates are dead
  once it has run;
- captures use ``capture_error_mode="thread_local"`` so other threads' CUDA calls do not break them.

The cache's lock makes concurrent calls from several threads safe: the static input/output of a
graph are shared by every call of its shape.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import torch
from torch import Tensor


def capture(fn: Callable[[], None], pool):
    """Warm ``fn`` up on a side stream (Triton compiles and autotunes outside the capture), then
    capture it into a new ``torch.cuda.CUDAGraph`` in memory pool ``pool`` (None: a new one)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        fn()
    return graph


class GraphCache:
    """``cache(run, x, out, fixed)``: ``run(x, out)`` through a cached graph; see the module docstring."""

    def __init__(self, size: int):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"graph_cache_size: expected an int >= 1, got {size!r}")
        self.size = size
        self.graphs: OrderedDict = OrderedDict()  # key -> (graph, static_x, static_y)
        self.seen: OrderedDict = OrderedDict()  # keys run once, not captured yet
        self.pool = None
        self.lock = threading.Lock()

    def __call__(self, run: Callable[[Tensor, Tensor], Tensor], x: Tensor, out: Tensor, fixed: bool = False) -> Tensor:
        key = (tuple(x.shape), x.dtype)
        with self.lock:
            entry = self.graphs.get(key)
            if entry is None and not fixed and key not in self.seen:
                self.seen[key] = None
                _trim(self.seen, 4 * self.size)
                entry = False
            elif entry is None:
                self.seen.pop(key, None)
                entry = self.graphs[key] = self._capture(run, x, out)
                _trim(self.graphs, self.size)
            else:
                self.graphs.move_to_end(key)
            if entry:
                graph, static_x, static_y = entry
                static_x.copy_(x)
                graph.replay()
                return out.copy_(static_y)
        return run(x, out)  # first sight of a shape: plain (stateless, so outside the lock)

    def _capture(self, run, x: Tensor, out: Tensor):
        static_x, static_y = x.clone(), torch.empty_like(out)
        graph = capture(lambda: run(static_x, static_y), self.pool)
        if self.pool is None:
            self.pool = graph.pool()
        return graph, static_x, static_y

    def clear(self) -> None:
        with self.lock:
            self.graphs.clear()
            self.seen.clear()

    def __len__(self) -> int:
        return len(self.graphs)

    def __deepcopy__(self, memo) -> "GraphCache":
        return GraphCache(self.size)  # a copied model captures its own graphs


def _trim(lru: OrderedDict, size: int) -> None:
    while len(lru) > size:
        lru.popitem(last=False)
