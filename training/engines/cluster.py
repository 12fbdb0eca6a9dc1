"""Processes of a ``torchrun`` launch as one cluster: rank 0 drives the run, the other ranks serve it.

``torchrun --nproc-per-node P [--nnodes M ...] -m training.swamp ...`` starts P*M copies of the
program. Rank 0 runs the whole run (:func:`training.run.run_swamp`) and is the only one that reads or
writes the run directory; the other ranks receive rank 0's resolved configuration, build the same
data and model, and wait for commands (``train``, ``average``, ``recalibrate``, ``stop``). So a
multi-node run needs the run directory on rank 0's node only (and the dataset on every node).

Control messages and particle states travel as plain dicts of tensors over a gloo group and are
unpickled with ``weights_only=True``; averages and BatchNorm statistics are all-reduced over the
default group (gloo on the CPU, NCCL on GPUs, each rank on ``cuda:LOCAL_RANK``).

Failure: every rank takes part in the same sequence of status exchanges during a job; a rank that
fails sends its error in place of its next exchange, and every rank then stops with
``rank R failed: ...`` (:class:`PeerFailure`). A rank that dies outright makes the others' next
collective fail (gloo notices the closed connection at once; NCCL may wait for ``TIMEOUT``), which
stops them too, with one line: ``a collective operation failed (...)``. Whatever rank 0 saved
before (finished particles, per-epoch resume state of every particle) is what ``--resume`` continues
from. Unless a collective itself failed (:attr:`Cluster.broken`), the ranks meet at a last barrier
before leaving: rank 0 hosts the rendezvous store, and a process that exits while its peers still
use the group may abort at interpreter exit. A broken cluster is abandoned, not destroyed (destroying gloo
with a dead peer can abort too), and the program ends with :func:`exit_now` (no interpreter teardown).

Stopping (SIGTERM, Ctrl-C): the signal reaches every rank of a torchrun launch (torchrun forwards SIGTERM;
a terminal's Ctrl-C reaches the process group), so no rank waits for another any more: each abandons the
cluster and ends with the one ``terminated`` line. A rank blocked inside a collective runs no Python
signal handler until the collective returns (up to :data:`TIMEOUT`); :func:`ends_on_signals` ends it
:data:`GRACE_SECONDS` after the signal all the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from core.averaging import RunningAverage
from core.errors import RESUME_RUN, UserError, stopped_line
from training.train import TrainState

if TYPE_CHECKING:
    from training.config import RunConfig

State = dict[str, Tensor]
TIMEOUT = datetime.timedelta(minutes=30)
GRACE_SECONDS = 5.0  # after SIGTERM or Ctrl-C, how long a rank may take to stop by itself before it is ended


class PeerFailure(UserError):
    """Some rank failed during a job; every rank stops with its message."""


def _first_sentence(err: BaseException) -> str:
    """``err``'s first sentence, without a leading ``[source.cc:line]``."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0] if str(err).strip() else "")
    return text.split(". ")[0].rstrip(".") or type(err).__name__


def world_size() -> int:
    """Processes in this launch (``WORLD_SIZE`` set by torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def to_device(state: State, device: torch.device | str) -> State:
    return {k: v.detach().to(device) for k, v in state.items()}


def train_state_message(state: TrainState) -> dict[str, Any]:
    """A resume state as a plain dict of CPU tensors (what ``weights_only`` unpickling accepts)."""
    return {"epoch": state.epoch, "model": to_device(state.model, "cpu"), "momentum": to_device(state.momentum, "cpu"),
            "swa": to_device(state.swa.state, "cpu"), "swa_count": state.swa.count, "rng": state.rng.cpu()}


def train_state_from_message(msg: dict[str, Any], device: torch.device) -> TrainState:
    return TrainState(msg["epoch"], to_device(msg["model"], device), to_device(msg["momentum"], device),
                      RunningAverage(to_device(msg["swa"], device), msg["swa_count"]), msg["rng"])


@dataclasses.dataclass
class Cluster:
    """This process's place in the launch, and the collectives the engine and the run use."""

    rank: int
    world: int
    device: torch.device
    objects: Any = None  # the gloo group for control messages (None: the default group is gloo)
    listening: bool = True  # False once the workers have left their command loop
    broken: bool = False  # True once a collective failed (a rank died): the ranks are no longer in step
    held: dict[int, State] = dataclasses.field(default_factory=dict)  # particles trained here this cycle

    def _call(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        """``op(*args, **kwargs)``, a torch.distributed collective. If it fails (a rank died, or the
        network failed), the cluster is broken: no rank can take part in any further collective."""
        try:
            return op(*args, **kwargs)
        except Exception as err:
            self.broken, self.listening = True, False
            raise PeerFailure(f"a collective operation failed ({_first_sentence(err)}), so another rank has "
                              "probably stopped; what rank 0 saved is kept: rerun with --resume") from err

    # --- messages -------------------------------------------------------------------------------
    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        self._call(dist.broadcast_object_list, box, src=0, group=self.objects, weights_only=True)
        return box[0]

    def scatter(self, per_rank: list[Any] | None) -> Any:
        """Item ``rank`` of rank 0's ``per_rank`` on each rank."""
        box: list[Any] = [None]
        self._call(dist.scatter_object_list, box, per_rank, src=0, group=self.objects, weights_only=True)
        return box[0]

    def exchange(self, payload: Any = None, error: str | None = None) -> list[Any] | None:
        """Every rank's status (raises :class:`PeerFailure` if one failed); rank 0 gets every payload."""
        statuses: list[Any] = [None] * self.world
        self._call(dist.all_gather_object, statuses, error, group=self.objects, weights_only=True)
        failed = [(r, e) for r, e in enumerate(statuses) if e is not None]
        if failed:
            self.listening = False
            if error is None:
                rank, message = failed[0]
                raise PeerFailure(f"rank {rank} failed: {message}; what rank 0 saved is kept: rerun with --resume")
            return None
        gathered: list[Any] | None = [None] * self.world if self.rank == 0 else None
        self._call(dist.gather_object, payload, gathered, dst=0, group=self.objects, weights_only=True)
        return gathered

    def report(self, err: BaseException) -> None:
        """Send ``err`` in place of this rank's next exchange, so every rank stops."""
        self.exchange(error=str(err).splitlines()[0] if str(err) else type(err).__name__)

    # --- collectives on states ------------------------------------------------------------------
    def all_reduce_sum(self, tensors: list[Tensor]) -> list[Tensor]:
        """Elementwise sums over the ranks (one flat all-reduce per dtype)."""
        out = list(tensors)
        for dtype in sorted({t.dtype for t in tensors}, key=str):  # the same order on every rank
            idx = [i for i, t in enumerate(tensors) if t.dtype == dtype]
            flat = torch.cat([tensors[i].reshape(-1) for i in idx]).to(self.device)
            self._call(dist.all_reduce, flat)
            for i, chunk in zip(idx, flat.split([tensors[i].numel() for i in idx]), strict=True):
                out[i] = chunk.view_as(tensors[i])
        return out

    def abandon(self) -> None:
        """Take part in no further collective (the ranks are being stopped): :meth:`leave` abandons the group."""
        self.broken, self.listening = True, False

    def leave(self) -> None:
        """Meet the other ranks and destroy the process group; a broken cluster (a peer died) is abandoned
        instead: tearing gloo down with a dead peer can abort the process (``terminate called without an
        active exception``), so the group is left alone and the program ends with :func:`exit_now`."""
        global _ABANDONED
        if self.broken:
            _ABANDONED = True
            return
        try:
            self._call(dist.barrier)
        finally:
            dist.destroy_process_group()


_ABANDONED = False


def abandoned() -> bool:
    """Whether this process left a broken cluster without destroying it (see :meth:`Cluster.leave`)."""
    return _ABANDONED


def exit_now(code: int) -> None:
    """End the process with ``code``: after an abandoned (broken) cluster without interpreter teardown, whose
    destruction of the process group could abort; otherwise as ``sys.exit`` does."""
    sys.stdout.flush()
    sys.stderr.flush()
    if _ABANDONED:
        os._exit(code)
    sys.exit(code)


def _end_after(read_fd: int, done: threading.Event, grace: float, rerun: str) -> None:
    """The watcher of :func:`ends_on_signals`: waits for a signal's byte on ``read_fd`` (or its end), then ``grace``
    seconds for ``done``, and ends the process if it is still in the session."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        signums: bytes = b""
        while not signums:
            data = pipe.read(64)
            if not data:  # the session ended: the write end is closed
                return
            signums = bytes(b for b in data if b in (signal.SIGTERM, signal.SIGINT))
    if done.wait(grace):
        return
    print(stopped_line(signums[0], rerun), file=sys.stderr, flush=True)
    os._exit(128 + signums[0])


@contextlib.contextmanager
def ends_on_signals(grace: float = GRACE_SECONDS, rerun: str = RESUME_RUN) -> Iterator[None]:
    """While inside, a SIGTERM or SIGINT ends the process within ``grace`` seconds, printing :func:`stopped_line`
    and exiting with status 128 + the signal, unless the program has left the block by then.

    Python runs signal handlers only in the main thread between bytecodes, so one blocked in a collective (a
    gloo or NCCL wait releases the GIL) would run ``run_cli``'s handler only when the collective returns: up
    to :data:`TIMEOUT`. The C-level handler still writes the signal's number to the wakeup fd
    (``signal.set_wakeup_fd``), which a watcher thread reads. Only for signals with a Python handler (SIGINT's
    default, SIGTERM's under ``run_cli``); outside the main thread it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    done = threading.Event()
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=_end_after, args=(read_fd, done, grace, rerun), name="ends-on-signals",
                     daemon=True).start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        os.close(write_fd)


def join(cfg: RunConfig) -> Cluster:
    """Initialise torch.distributed from torchrun's environment (``env://``)."""
    rank, world, local = int(os.environ["RANK"]), world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=TIMEOUT)
    objects = dist.new_group(backend="gloo") if backend != "gloo" else None
    return Cluster(rank, world, device, objects)
