"""Framing of the process pool's messages over a private stream socket.

A message is one pickle (protocol 5) plus its out-of-band buffers: large numpy arrays and
large ``bytes`` travel beside the pickle stream instead of inside it, so the sender never
copies them into the pickle and the receiver reads each one straight into its own writable
buffer (``socket.recv_into``): one kernel copy each way and no copy in user space.

Frame layout: ``<main length: u64><buffer count: u32><tag: u32>``, one ``u64`` per buffer
length, the pickle, then the buffers. The tag is read before the pickle is loaded (a
receiver can note which frame it is loading). Nothing here knows about tokens or calls.
"""

from __future__ import annotations

import io
import pickle
import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = (
    "LARGE_BYTES",
    "MessageReader",
    "Outbox",
    "dumps",
    "send_frame",
    "wrap_large_bytes",
)

_HEAD = struct.Struct("<QII")
_LEN = struct.Struct("<Q")
_LEN32 = struct.Struct("<I")
_PROTOCOL = 5
#: ``bytes`` at least this long cross out of band (as a pickle buffer), never inside the pickle.
LARGE_BYTES = 64 * 1024
#: Buffers at least this long are read straight into their own buffer by the receiver.
_DIRECT = 64 * 1024
_CHUNK = 256 * 1024


class _LargeBytes:
    """Carries a large ``bytes`` out of band; unpickles to the same ``bytes`` value."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> tuple[Callable[[Any], bytes], tuple[Any]]:
        if int(protocol) >= 5:
            return bytes, (pickle.PickleBuffer(self.data),)
        return bytes, (self.data,)


def wrap_large_bytes(value: object) -> object:
    """``value``, with a large top-level ``bytes`` marked to cross out of band."""
    if type(value) is bytes and len(value) >= LARGE_BYTES:
        return _LargeBytes(value)
    return value


def dumps(obj: object, by_value: bool = False) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj`` (protocol 5): the stream and its out-of-band buffers.

    With ``by_value`` the pickle is made by cloudpickle, so closures, lambdas and functions of
    ``__main__`` travel by value; plain pickle (the fast path) otherwise.
    """
    buffers: list[pickle.PickleBuffer] = []
    if by_value:
        import cloudpickle  # type: ignore[import-untyped]

        stream = io.BytesIO()
        cloudpickle.Pickler(stream, protocol=_PROTOCOL, buffer_callback=buffers.append).dump(obj)
        return stream.getvalue(), buffers
    return pickle.dumps(obj, _PROTOCOL, buffer_callback=buffers.append), buffers


def send_frame(
    sock: socket.socket, main: bytes, buffers: list[pickle.PickleBuffer], tag: int = 0
) -> None:
    """Write one frame: the header, the pickle, then each buffer without copying it."""
    views = [buffer.raw() for buffer in buffers]
    head = _HEAD.pack(len(main), len(views), tag) + b"".join(_LEN.pack(v.nbytes) for v in views)
    if not views:
        sock.sendall(head + main)
        return
    if len(main) < _DIRECT:
        sock.sendall(head + main)
    else:
        sock.sendall(head)
        sock.sendall(main)
    for view in views:
        sock.sendall(view)
        view.release()


class MessageReader:
    """Reads frames from a stream socket and unpickles them.

    Small frames are parsed out of one reusable chunk (many per ``recv``); a large buffer is
    received straight into a ``bytearray`` of its own, which the unpickled object (a numpy
    array, say) then uses without another copy.
    """

    __slots__ = ("_buf", "_end", "_sock", "_start", "on_tag", "tag")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray(_CHUNK)
        self._start = 0
        self._end = 0
        #: The tag of the frame read last (set before its pickle is loaded).
        self.tag = 0
        #: Called with a non-zero tag right before that frame's pickle is loaded.
        self.on_tag: Callable[[int], None] | None = None

    def buffered(self) -> bool:
        """Whether a complete frame is already buffered (reading it will not block)."""
        have = self._end - self._start
        if have < _HEAD.size:
            return False
        main, count, _tag = _HEAD.unpack_from(self._buf, self._start)
        need = _HEAD.size + count * _LEN.size
        if have < need:
            return False
        total: int = need + main
        for i in range(count):
            size: int = _LEN.unpack_from(self._buf, self._start + _HEAD.size + i * _LEN.size)[0]
            total += size
        return have >= total

    def _fill(self, need: int) -> None:
        """Make ``need`` bytes available from ``_start``; EOFError when the peer closed."""
        if self._end - self._start >= need:
            return
        if self._start + need > len(self._buf):
            if need > len(self._buf):
                grown = bytearray(max(need, 2 * len(self._buf)))
                grown[: self._end - self._start] = self._buf[self._start : self._end]
                self._buf = grown
            else:
                self._buf[: self._end - self._start] = self._buf[self._start : self._end]
            self._end -= self._start
            self._start = 0
        view = memoryview(self._buf)
        try:
            while self._end - self._start < need:
                got = self._sock.recv_into(view[self._end :])
                if not got:
                    raise EOFError("the peer closed the connection")
                self._end += got
        finally:
            view.release()

    def _take(self, size: int) -> bytes:
        self._fill(size)
        data = bytes(self._buf[self._start : self._start + size])
        self._start += size
        return data

    def _take_buffer(self, size: int) -> bytearray:
        if size < _DIRECT:
            self._fill(size)
            data = bytearray(self._buf[self._start : self._start + size])
            self._start += size
            return data
        target = bytearray(size)
        have = min(size, self._end - self._start)
        target[:have] = self._buf[self._start : self._start + have]
        self._start += have
        view = memoryview(target)
        try:
            while have < size:
                got = self._sock.recv_into(view[have:])
                if not got:
                    raise EOFError("the peer closed the connection")
                have += got
        finally:
            view.release()
        return target

    def read(self) -> object:
        """The next message (blocks until it is complete).

        Raises:
            EOFError: the peer closed the connection (or died).
            OSError: the socket failed.
            Exception: the pickle could not be loaded (the frame is consumed).
        """
        self._fill(_HEAD.size)
        main, count, tag = _HEAD.unpack_from(self._buf, self._start)
        self._start += _HEAD.size
        sizes: list[int] = []
        if count:
            self._fill(count * _LEN.size)
            for _ in range(count):
                sizes.append(_LEN.unpack_from(self._buf, self._start)[0])
                self._start += _LEN.size
        stream = self._take(main)
        buffers = [self._take_buffer(size) for size in sizes]
        if self._start == self._end:
            self._start = self._end = 0
        self.tag = tag
        if tag and self.on_tag is not None:
            self.on_tag(tag)
        return pickle.loads(stream, buffers=buffers)


class Outbox:
    """A ring of outcomes in memory shared by a worker process and its parent.

    The worker appends each outcome (a length-prefixed pickle) without a system call; the
    parent takes everything written so far in one go. What was written survives the worker:
    a parent reads it even after the worker died. Positions are running byte totals kept in
    two shared counters (written by the worker, read by the parent); one writer, one reader.
    """

    __slots__ = ("_counters", "_read_at", "_size", "_view", "_written_at")

    def __init__(self, buffer: Any, counters: Any, written_at: int, read_at: int) -> None:
        self._view = memoryview(buffer).cast("B")
        self._size = len(self._view)
        self._counters = counters
        self._written_at = written_at
        self._read_at = read_at

    def _put(self, position: int, data: bytes) -> None:
        start = position % self._size
        first = min(len(data), self._size - start)
        self._view[start : start + first] = data[:first]
        if first < len(data):
            self._view[: len(data) - first] = data[first:]

    def _get(self, position: int, size: int) -> bytes:
        start = position % self._size
        first = min(size, self._size - start)
        data = bytes(self._view[start : start + first])
        if first < size:
            data += bytes(self._view[: size - first])
        return data

    def write(self, payload: bytes) -> bool:
        """Append ``payload`` (worker side); False when it does not fit now."""
        counters = self._counters
        written = counters[self._written_at]
        need = _LEN32.size + len(payload)
        if need > self._size - (written - counters[self._read_at]):
            return False
        self._put(written, _LEN32.pack(len(payload)) + payload)
        counters[self._written_at] = written + need  # published after the bytes
        return True

    def pending(self) -> bool:
        """Whether anything was written that the parent has not read."""
        counters = self._counters
        return bool(counters[self._written_at] != counters[self._read_at])

    def read_all(self) -> tuple[list[object], list[Exception]]:
        """Unpickle and consume everything written so far (parent side): the values, and
        the errors of entries that could not be unpickled (those are consumed too)."""
        counters = self._counters
        position = counters[self._read_at]
        end = counters[self._written_at]
        values: list[object] = []
        problems: list[Exception] = []
        if position >= end:
            return values, problems
        data = self._get(position, end - position)  # one copy of all that arrived
        loads = pickle.loads
        unpack = _LEN32.unpack_from
        view = memoryview(data)
        at = 0
        total = len(data)
        try:
            while at < total:
                (size,) = unpack(data, at)
                at += _LEN32.size
                try:
                    values.append(loads(view[at : at + size]))
                except Exception as exc:
                    problems.append(exc)
                at += size
        finally:
            view.release()
        counters[self._read_at] = end  # consumed: the worker may write there again
        return values, problems
