"""L{ilchat.eventloop}: an epoll reactor that dispatches ready descriptors without a log context."""

import socket

from twisted.internet import epollreactor, selectreactor
from twisted.logger import globalLogPublisher
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ilchat.eventloop import use_lean_dispatch


class _Reader:
    """A readable end of a socket pair that records what its C{doRead} saw."""

    def __init__(self, sock, fail=False):
        self.sock = sock
        self.fail = fail
        self.reads = []
        self.systems = []
        self.lost = []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):  # noqa: N802 (twisted API)
        return "Reader"

    def doRead(self):  # noqa: N802 (twisted API)
        self.reads.append(self.sock.recv(100))
        self.systems.append(context.get(log.ILogContext, {}).get("system"))
        if self.fail:
            raise RuntimeError("doRead broke")

    def connectionLost(self, reason):  # noqa: N802 (twisted API)
        self.lost.append(reason)


class LeanDispatchTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = epollreactor.EPollReactor()
        self.addCleanup(self.reactor._poller.close)

    def _pair(self, **kwargs):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        reader = _Reader(ours, **kwargs)
        self.reactor.addReader(reader)
        self.addCleanup(self.reactor.removeReader, reader)
        return reader, theirs

    def test_ready_descriptors_are_read_without_a_log_context(self):
        """Every ready descriptor gets its doRead, with no ``system`` of its own pushed around it."""
        self.assertTrue(use_lean_dispatch(self.reactor))
        one, one_peer = self._pair()
        two, two_peer = self._pair()
        one_peer.send(b"a")
        two_peer.send(b"b")
        self.reactor.doIteration(0)
        self.assertEqual((one.reads, two.reads), ([b"a"], [b"b"]))
        self.assertEqual(one.systems + two.systems, ["-", "-"])  # the default context's

    def test_twisted_own_dispatch_pushes_one(self):
        """What the lean dispatch leaves out: doPoll's callWithLogger context."""
        reader, peer = self._pair()
        peer.send(b"a")
        self.reactor.doIteration(0)
        self.assertEqual(reader.systems, ["Reader"])

    def test_a_failing_reader_is_disconnected_and_the_others_still_read(self):
        """As with doPoll: the exception is logged, that descriptor lost, the poll goes on."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        use_lean_dispatch(self.reactor)
        broken, broken_peer = self._pair(fail=True)
        fine, fine_peer = self._pair()
        broken_peer.send(b"x")
        fine_peer.send(b"y")
        self.reactor.doIteration(0)
        self.assertEqual((broken.reads, fine.reads), ([b"x"], [b"y"]))
        self.assertEqual(len(broken.lost), 1)
        self.assertEqual(fine.lost, [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_an_escaping_exception_is_logged_and_the_poll_goes_on(self):
        """What callWithLogger itself catches (here: _doReadOrWrite breaking) is logged too."""
        use_lean_dispatch(self.reactor)
        seen = []

        def broken_dispatch(selectable, fd, event):
            seen.append(selectable)
            raise ValueError("dispatch broke")

        self.reactor._doReadOrWrite = broken_dispatch
        one, one_peer = self._pair()
        two, two_peer = self._pair()
        one_peer.send(b"a")
        two_peer.send(b"b")
        self.reactor.doIteration(0)
        self.assertEqual(sorted(map(id, seen)), sorted([id(one), id(two)]))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    def test_a_timeout_of_none_waits_for_an_event(self):
        """``None`` is epoll's -1 (no limit), not an error: here an event is already there."""
        use_lean_dispatch(self.reactor)
        reader, peer = self._pair()
        peer.send(b"z")
        self.reactor.doIteration(None)
        self.assertEqual(reader.reads, [b"z"])

    def test_other_reactors_are_left_alone(self):
        """A select reactor, or an epoll one whose doIteration was changed, keeps its own."""
        other = selectreactor.SelectReactor()
        self.assertFalse(use_lean_dispatch(other))
        self.assertNotIn("doIteration", vars(other))

        class Changed(epollreactor.EPollReactor):
            def doIteration(self, timeout):  # noqa: N802 (twisted API)
                pass

        changed = Changed()
        self.addCleanup(changed._poller.close)
        self.assertFalse(use_lean_dispatch(changed))
        self.assertNotIn("doIteration", vars(changed))


class ServerUsesLeanDispatchTests(TestCase):
    async def test_a_started_server_with_it_serves_over_the_lean_dispatch(self):
        """With C{lean_dispatch} (what twistd's makeService passes) the reactor's loop is swapped,
        and requests are still answered through it."""
        from twisted.internet import reactor

        from tests.support.server import start_server

        self.assertIsInstance(reactor, epollreactor.EPollReactor)  # trial's default on Linux
        self.addCleanup(vars(reactor).pop, "doIteration", None)
        server = await start_server(self, lean_dispatch=True)
        self.assertIn("doIteration", vars(reactor))
        from twisted.web.client import Agent, readBody

        response = await Agent(reactor).request(
            b"GET", b"http://127.0.0.1:%d/socket.io/?EIO=4&transport=polling" % server.port
        )
        self.assertEqual(response.code, 200)
        self.assertTrue((await readBody(response)).startswith(b"0{"))
