"""The log and error_log files: level filtering, errors with tracebacks, reopening after rotation."""

from __future__ import annotations

import os

import attrs
from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ilchat.logs import LEVELS, LogService, debug_wanted, format_line


@attrs.frozen
class _Config:
    log: str
    error_log: str
    log_level: str


class LogServiceTests(SynchronousTestCase):
    def make(self, level: str) -> tuple:
        folder = os.path.abspath(self.mktemp())
        config = _Config(os.path.join(folder, "logs", "chat.log"), os.path.join(folder, "chatError.log"), level)
        publisher = LogPublisher()
        service = LogService(config, publisher)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service, Logger(namespace="ilchat.test", observer=publisher), config

    def read(self, path: str) -> str:
        with open(path, encoding="utf-8") as f:
            return f.read()

    def test_log_level_filters_the_main_log(self) -> None:
        """At "warning", info and debug lines are dropped, warnings and errors kept."""
        service, log, config = self.make("warning")
        log.debug("a debug line")
        log.info("an info line")
        log.warn("a warning about {thing}", thing="disk")
        log.error("an error line")
        text = self.read(config.log)
        self.assertNotIn("debug line", text)
        self.assertNotIn("info line", text)
        self.assertIn("WARN - a warning about disk", text)
        self.assertIn("ERROR - an error line", text)

    def test_debug_level_keeps_everything(self) -> None:
        """"silly" (winston's chattiest) maps to debug: all lines are kept."""
        service, log, config = self.make("silly")
        log.debug("a debug line")
        self.assertIn("DEBUG - a debug line", self.read(config.log))

    def test_error_log_gets_errors_and_failures_with_traceback_only(self) -> None:
        """error_log has errors and failures with their traceback, and no info lines."""
        service, log, config = self.make("info")
        log.info("just info")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("Division went wrong for {who}", who="alice")
        log.error("plain error")
        text = self.read(config.error_log)
        self.assertNotIn("just info", text)
        self.assertIn("Division went wrong for alice", text)
        self.assertIn("Traceback", text)
        self.assertIn("ZeroDivisionError", text)
        self.assertIn("plain error", text)
        # The failure is in the main log as well (at critical).
        self.assertIn("Division went wrong for alice", self.read(config.log))

    def test_reopen_writes_to_a_new_file_after_rotation(self) -> None:
        """After logrotate renames the file, reopen() makes a new one and old lines stay in the old."""
        service, log, config = self.make("info")
        log.info("before rotation")
        os.rename(config.log, config.log + ".1")
        log.info("between")  # still goes to the renamed file (open handle)
        service.reopen()
        log.info("after rotation")
        self.assertIn("between", self.read(config.log + ".1"))
        self.assertIn("after rotation", self.read(config.log))
        self.assertNotIn("before rotation", self.read(config.log))

    def test_twisted_port_announcements_are_left_out(self) -> None:
        """ilchat names its listeners itself: Twisted's "X starting on N" is not written twice."""
        from twisted.python import log as legacy

        service, log, config = self.make("info")
        # What twisted.internet.tcp.Port logs with twisted.python.log.msg, on this publisher.
        legacy_log = legacy.LogPublisher(observerPublisher=service.publisher, publishPublisher=service.publisher)
        legacy_log.msg("ChatSite starting on 8888")
        legacy_log.msg("(TCP Port 8888 Closed)")
        legacy_log.msg("some other legacy line starting on 5")
        text = self.read(config.log)
        self.assertNotIn("starting on 8888", text)
        self.assertIn("(TCP Port 8888 Closed)", text)
        self.assertIn("some other legacy line starting on 5", text)

    def test_stop_removes_the_observers(self) -> None:
        """Nothing is written after the service stops."""
        service, log, config = self.make("info")
        service.stopService()
        log.info("after stop")
        self.assertNotIn("after stop", self.read(config.log))

    def test_syslog_names_map_to_twisted_levels(self) -> None:
        """Every ILIAS level name has a Twisted level."""
        self.assertEqual(LEVELS["emerg"], LogLevel.critical)
        self.assertEqual(LEVELS["warning"], LogLevel.warn)
        self.assertEqual(LEVELS["notice"], LogLevel.info)
        self.assertEqual(LEVELS["silly"], LogLevel.debug)
        self.assertEqual(len(LEVELS), 9)

    def test_line_format_has_iso_time_level_and_message(self) -> None:
        """[<ISO time with offset>] LEVEL - message, as ILIAS 11 writes."""
        line = format_line({"log_time": 0.5, "log_level": LogLevel.info, "log_format": "hi {x}", "x": 1})
        self.assertRegex(line, r"^\[1970-01-01T\d\d:\d\d:00\.500[+-]\d{4}\] INFO - hi 1\n$")


class OtherObserverTests(SynchronousTestCase):
    """``filter_others``: twistd's own observer (stdout under ``-n``) obeys ``log_level`` too."""

    def make(self, level: str) -> tuple:
        folder = os.path.abspath(self.mktemp())
        config = _Config(os.path.join(folder, "chat.log"), os.path.join(folder, "chatError.log"), level)
        stdout: list = []
        publisher = LogPublisher(stdout.append)
        service = LogService(config, publisher, filter_others=True)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service, Logger(namespace="ilchat.test", observer=publisher), stdout, publisher

    def texts(self, events: list) -> list:
        return [e["log_format"] for e in events]

    def test_info_level_keeps_debug_events_from_stdout(self) -> None:
        """At "info", a debug event reaches neither stdout nor the file; info and errors do."""
        service, log, stdout, _ = self.make("info")
        self.assertFalse(debug_wanted())
        log.debug("a debug line")
        log.info("an info line")
        self.assertEqual(self.texts(stdout), ["an info line"])

    def test_errors_reach_stdout_at_any_level(self) -> None:
        """At "crit", failures with their traceback still reach stdout."""
        service, log, stdout, _ = self.make("crit")
        log.info("an info line")
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("it broke")
        self.assertEqual(self.texts(stdout), ["it broke"])

    def test_debug_level_lets_debug_events_through(self) -> None:
        service, log, stdout, _ = self.make("debug")
        self.assertTrue(debug_wanted())
        log.debug("a debug line")
        self.assertEqual(self.texts(stdout), ["a debug line"])

    def test_stop_puts_the_observer_back_unfiltered(self) -> None:
        service, log, stdout, publisher = self.make("info")
        service.stopService()
        self.assertTrue(debug_wanted())
        log.debug("after stop")
        self.assertEqual(self.texts(stdout), ["after stop"])

    def test_without_filter_others_the_observer_is_untouched(self) -> None:
        """In-process tests (no twistd) keep the test runner's observers as they are."""
        folder = os.path.abspath(self.mktemp())
        config = _Config(os.path.join(folder, "chat.log"), os.path.join(folder, "chatError.log"), "info")
        stdout: list = []
        publisher = LogPublisher(stdout.append)
        service = LogService(config, publisher)
        service.startService()
        self.addCleanup(service.stopService)
        Logger(observer=publisher).debug("a debug line")
        self.assertEqual(self.texts(stdout), ["a debug line"])


class RepeatedLogTests(SynchronousTestCase):
    """Identical lines within the window: the first at once, then one line with the count."""

    def make(self, interval: float = 10.0):
        from twisted.internet.task import Clock

        from ilchat.logs import RepeatedLog

        events: list = []
        publisher = LogPublisher(events.append)
        clock = Clock()
        return RepeatedLog(Logger(namespace="ilchat.test", observer=publisher), clock, interval), clock, events

    def texts(self, events: list) -> list:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in events]

    def test_a_flood_becomes_two_lines(self) -> None:
        """27,777 identical lines: one now, one with the count when the window ends."""
        repeats, clock, events = self.make()
        for _ in range(27_777):
            repeats.info("{event} from {sid} refused: {reason}", event="x", sid="s1", reason="r")
        self.assertEqual(self.texts(events), ["x from s1 refused: r"])
        clock.advance(10)
        self.assertEqual(
            self.texts(events),
            ["x from s1 refused: r", "x from s1 refused: r (repeated 27776 times in 10.0 s)"],
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_different_lines_are_not_merged(self) -> None:
        """Other values (or another level) make another line; a given key groups on purpose."""
        repeats, clock, events = self.make()
        repeats.info("refused: {reason}", reason="a")
        repeats.info("refused: {reason}", reason="b")
        repeats.warn("refused: {reason}", reason="a")
        repeats.info("{sid} bad", sid="1", key="bad")
        repeats.info("{sid} bad", sid="2", key="bad")
        self.assertEqual(
            self.texts(events), ["refused: a", "refused: b", "refused: a", "1 bad"]
        )
        self.assertEqual(events[2]["log_level"], LogLevel.warn)

    def test_after_the_window_a_line_goes_out_again(self) -> None:
        """A line that comes back after a quiet window is logged at once, like a new one."""
        repeats, clock, events = self.make(interval=5)
        repeats.info("same")
        clock.advance(6)
        repeats.info("same")
        self.assertEqual(self.texts(events), ["same", "same"])

    def test_flush_writes_the_counts_and_leaves_no_timer(self) -> None:
        """The owner's stop: pending counts are written now and the timers cancelled."""
        repeats, clock, events = self.make()
        repeats.info("same")
        repeats.info("same")
        repeats.info("same")
        repeats.flush()
        self.assertEqual(self.texts(events), ["same", "same (repeated 2 times in 0.0 s)"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_values_that_cannot_be_hashed_still_group(self) -> None:
        """A list among the fields is compared by its text."""
        repeats, clock, events = self.make()
        repeats.info("users {users}", users=[1, 2])
        repeats.info("users {users}", users=[1, 2])
        repeats.flush()
        self.assertEqual(len(events), 2)
