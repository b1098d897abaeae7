"""Several processes under torchrun: the process group, shards, gathers to rank 0, and how a job
with a failed or dead process ends (one line, every process non-zero, within a minute).

    torchrun --nproc-per-node 2 cache.py --subset train        # one machine, 2 processes
    python -c "from flowercam import dist; print(dist.shard(list(range(10))))"   # no torchrun

Without torchrun (no WORLD_SIZE, or 1) nothing here starts: rank 0 of 1, shard() returns
everything and gather() a list of one, so one process runs exactly as before. Under torchrun
(env RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) run_main starts the process group:
gloo for --device cpu, nccl for cuda (device cuda:LOCAL_RANK). Collectives first wait at an
arrival point in torchrun's store, where a slow peer may take as long as it needs while a dead
one is noticed: every process beats a heartbeat into the store every HEARTBEAT s; a peer silent
for DEAD_AFTER s ends the job; the gloo/nccl collective itself times out after TIMEOUT s. A
user error on one rank is printed there once, posted to the store, and every other rank exits
quietly with code 2.
"""

import _thread
import contextlib
import dataclasses
import io
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as tdist

from flowercam import core
from flowercam.core import UserError

TIMEOUT = 60.0  # s: one collective (all ranks already arrived), and the store's operations
HEARTBEAT = 2.0  # s between heartbeats
DEAD_AFTER = 30.0  # s without a peer's heartbeat: that peer is dead, the job stops
GRACE = 10.0  # s the main thread gets to unwind (save progress) before the process exits
PEER_FAILED = 2  # exit code of the ranks stopped by another rank's error


class Stopped(Exception):
    """This rank stops because another rank failed or went silent (reason in the message)."""


@dataclasses.dataclass
class _Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    store: object = None  # the main thread's client of torchrun's store (prefixed)
    calls: int = 0  # collectives so far: every rank makes the same calls in the same order
    reason: str | None = None  # why the watchdog stopped this rank ("" = a peer's user error)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)


_group = _Group()


def rank() -> int:
    return _group.rank


def world() -> int:
    return _group.world


def is_root() -> bool:
    return _group.rank == 0


def launched() -> bool:
    """True under torchrun (or any launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def shard(seq) -> list:
    """This rank's share of seq: every world()-th element from rank() (all of it alone)."""
    return list(seq)[_group.rank::_group.world]


def unshard(parts) -> list:
    """The per-rank shares of shard() (rank order) -> the original order."""
    out = []
    for i in range(max((len(p) for p in parts), default=0)):
        out += [p[i] for p in parts if i < len(p)]
    return out


def _client(timeout=TIMEOUT):
    store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                           is_master=False, timeout=timedelta(seconds=timeout))
    run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return tdist.PrefixStore(f"flowercam/{run}/{attempt}/", store)


def start(device="cpu") -> str:
    """Join the process group when launched (no-op otherwise) -> the device this rank uses."""
    if not launched() or tdist.is_initialized():
        return device
    _group.rank, _group.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    _group.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        device = device if ":" in str(device) else f"cuda:{_group.local_rank}"
        torch.cuda.set_device(torch.device(device))
    try:
        tdist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=TIMEOUT))
        _group.store = _client()
    except RuntimeError as err:  # a peer that never came, or left while the group formed
        raise Stopped(f"the processes did not all join within {TIMEOUT:.0f} s ("
                      f"{str(err).strip().splitlines()[0][:120]}): the job stops") from None
    signal.signal(signal.SIGTERM, _terminated)  # torchrun stopping the job: unwind, then go
    threading.Thread(target=_watch, args=(_client(),), daemon=True).start()
    return device


def _terminated(signum, frame):
    """torchrun's SIGTERM: unwind through Stopped, unless this rank is already leaving (its
    exit, atexit hooks included, then goes on quietly: a raise there is a traceback)."""
    if not _group.stop.is_set():
        raise Stopped("")


def finish():
    """Leave the group once every rank is done (rank 0 may host the store)."""
    if not tdist.is_initialized():
        return
    wait_all()
    _group.stop.set()
    with contextlib.suppress(Exception):
        tdist.destroy_process_group()


def _watch(store):
    """Heartbeat; stop the process when a peer posted an error or went silent."""
    seen = {}  # peer -> (last beat count, when it changed)
    while not _group.stop.wait(HEARTBEAT):
        try:
            store.add(f"beat/{_group.rank}", 1)
            reason = "" if store.check(["error"]) else _silent_peer(store, seen)
        except Exception:  # the store itself is gone: its host (torchrun on node 0) stopped
            reason = "lost contact with the job's rendezvous store (its machine stopped?)"
        if reason is not None and not _group.stop.is_set():
            _group.reason = reason
            _thread.interrupt_main()
            if not _group.stop.wait(GRACE):
                _say(reason)
                os._exit(PEER_FAILED)
            return


def _silent_peer(store, seen):
    now = time.monotonic()
    for peer in range(_group.world):
        if peer == _group.rank:
            continue
        beats = store.add(f"beat/{peer}", 0)
        if seen.get(peer, (None,))[0] != beats:
            seen[peer] = (beats, now)
        elif now - seen[peer][1] > DEAD_AFTER:
            return (f"rank {peer} has been silent for {DEAD_AFTER:.0f} s (killed, or its "
                    "machine is down): the job stops; rerun it (a cache build resumes)")
    return None


def _say(reason):
    if reason:
        print(f"error: {reason}", file=sys.stderr, flush=True)


def wait_all():
    """Every rank arrives here before any leaves (however long the others take); a dead peer
    or a peer's error ends the wait through the watchdog."""
    if _group.world == 1:
        return
    _group.calls += 1
    key = f"arrive/{_group.calls}"
    try:
        if _group.store.add(key, 1) == _group.world:
            _group.store.set(key + "/all", "1")
        pause = 0.005
        while not _group.store.check([key + "/all"]):
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
    except RuntimeError:  # the store is gone with the machine that hosted it
        raise Stopped("lost contact with the job's rendezvous store (its machine stopped?)"
                      ) from None


@contextlib.contextmanager
def _collective():
    """wait_all, then the collective; a peer lost inside it stops this rank (Stopped)."""
    wait_all()
    try:
        yield
    except RuntimeError as err:  # gloo/nccl: connection closed, timeout
        first = (str(err).strip().splitlines() or ["?"])[0][:160]
        raise Stopped(f"a peer left the job during a collective ({first}): the job stops; "
                      "rerun it") from None


def gather(obj) -> list | None:
    """[obj of every rank] (rank order) on rank 0, None elsewhere; [obj] alone."""
    if _group.world == 1:
        return [obj]
    out = [None] * _group.world if is_root() else None
    with _collective():
        tdist.gather_object(obj, out, dst=0)
    return out


def gather_ordered(pairs) -> list | None:
    """[(key, value)] of every rank -> on rank 0 the values sorted by key, None elsewhere."""
    parts = gather(list(pairs))
    if parts is None:
        return None
    return [value for _, value in sorted((p for part in parts for p in part),
                                         key=lambda p: p[0])]


def all_gather(obj) -> list:
    """[obj of every rank] on every rank."""
    if _group.world == 1:
        return [obj]
    out = [None] * _group.world
    with _collective():
        tdist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's obj on every rank."""
    if _group.world == 1:
        return obj
    box = [obj]
    with _collective():
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def _post_error(message) -> bool:
    """Tell the other ranks; True when this rank is the first to fail (it prints the line)."""
    mine = f"{_group.rank}: {message}"
    try:
        return _group.store.compare_set("error", "", mine).decode() == mine
    except Exception:
        return True


def _peer_error() -> bool:
    with contextlib.suppress(Exception):
        return _group.store.check(["error"])
    return False


def _run(main, args):
    try:
        device = start(getattr(args, "device", "cpu"))
        if hasattr(args, "device"):
            args.device = device
        result = main(args)
    except UserError as err:
        _group.stop.set()
        if _post_error(str(err)):
            raise  # core.run_main prints the one line
        sys.exit(PEER_FAILED)
    except (KeyboardInterrupt, Stopped) as err:
        if isinstance(err, KeyboardInterrupt) and _group.reason is None:
            raise  # Ctrl-C of this process: core.run_main's "interrupted"
        _group.stop.set()
        _say("" if _peer_error() else _group.reason or str(err))
        sys.exit(PEER_FAILED)
    try:
        finish()
    except (KeyboardInterrupt, Stopped):
        _say(_group.reason)
        sys.exit(PEER_FAILED)
    return result


def run_main(main, parser, argv=None, hints=None):
    """core.run_main, joined to the process group under torchrun; ranks > 0 parse silently
    (a bad flag is said once, by rank 0)."""
    if not launched():
        return core.run_main(main, parser, argv, hints)
    if int(os.environ.get("RANK", "0")) > 0:
        sink = io.StringIO()
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            parser.parse_args(argv)  # exits (silently) exactly when rank 0's parse does
    return core.run_main(lambda args: _run(main, args), parser, argv, hints)
