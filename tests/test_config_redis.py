"""server.cfg ``redis``: every key's default and every error text (validated now, used later)."""

import os
import socket

from ilchat.config import ConfigError, RedisConfig
from tests.test_config import ConfigTestCase


class RedisSectionTests(ConfigTestCase):
    def redis_error(self, **redis) -> str:
        """The whole error line for a ``redis`` section holding C{redis}."""
        return self.error({"redis": redis})

    def expect(self, key: str, value_json: str, allowed: str, **redis) -> None:
        path = os.path.join(self.folder, "server.cfg")
        self.assertEqual(
            self.redis_error(**redis),
            f"{path}: redis.{key} = {value_json} is not allowed; {allowed}",
        )

    def test_absent_or_null_section_is_none(self) -> None:
        """Without a section (or with ``null``) nothing about Redis is configured: one process."""
        server, _ = self.load()
        self.assertIsNone(server.redis)
        server, _ = self.load({"redis": None})
        self.assertIsNone(server.redis)

    def test_defaults(self) -> None:
        """An empty section: local Redis, db 0, prefix ilchat:, instance host name and port."""
        server, _ = self.load({"redis": {}, "port": 8123})
        self.assertEqual(
            server.redis,
            RedisConfig(
                host="127.0.0.1", port=6379, password=None, db=0, prefix="ilchat:",
                instance=f"{socket.gethostname()}:8123", tls=False, ca_file=None, route=None,
            ),
        )

    def test_every_key(self) -> None:
        """Each key is read into the typed, frozen RedisConfig; the CA file path is absolute."""
        self.write("ca.pem", "x")
        server, _ = self.load({"redis": {
            "host": "redis.example.org", "port": 6380, "password": "s3cret", "db": 2,
            "prefix": "site-a:", "instance": "chat1", "tls": True, "ca_file": "ca.pem",
            "route": "n1",
        }})
        redis = server.redis
        self.assertEqual(
            (redis.host, redis.port, redis.password, redis.db, redis.prefix, redis.instance,
             redis.tls, redis.ca_file, redis.route),
            ("redis.example.org", 6380, "s3cret", 2, "site-a:", "chat1", True,
             os.path.join(self.folder, "ca.pem"), "n1"),
        )
        self.assertNotIn("s3cret", repr(redis))
        self.assertRaises(AttributeError, setattr, redis, "port", 1)

    def test_tls_without_ca_file_uses_the_system_cas(self) -> None:
        server, _ = self.load({"redis": {"tls": True}})
        self.assertEqual((server.redis.tls, server.redis.ca_file), (True, None))

    def test_section_must_be_an_object(self) -> None:
        path = os.path.join(self.folder, "server.cfg")
        self.assertEqual(
            self.error({"redis": "localhost:6379"}),
            f'{path}: redis = "localhost:6379" is not allowed; expected a JSON object',
        )

    def test_host(self) -> None:
        self.expect("host", '""', "expected a non-empty string", host="")
        self.expect("host", "6379", "expected a non-empty string", host=6379)
        self.expect("host", '"redis host"', "expected a host name or IP address", host="redis host")
        self.expect("host", '"redis://x"', "expected a host name or IP address", host="redis://x")
        for host in ("redis-1.example.org", "10.0.0.5", "::1", "[2001:db8::1]"):
            server, _ = self.load({"redis": {"host": host}})
            self.assertEqual(server.redis.host, host)

    def test_port(self) -> None:
        for bad, shown in ((0, "0"), (65536, "65536"), ("6379", '"6379"'), (True, "true"),
                           (6379.5, "6379.5")):
            self.expect("port", shown, "expected an integer from 1 to 65535", port=bad)

    def test_password(self) -> None:
        self.expect("password", '""', "expected a non-empty string", password="")
        self.expect("password", "1234", "expected a non-empty string", password=1234)

    def test_db(self) -> None:
        allowed = "expected an integer from 0 to 2147483647"
        self.expect("db", "-1", allowed, db=-1)
        self.expect("db", "2147483648", allowed, db=2**31)
        self.expect("db", '"0"', allowed, db="0")

    def test_prefix(self) -> None:
        allowed = "expected 1 to 100 characters without spaces or control characters"
        self.expect("prefix", '""', allowed, prefix="")
        self.expect("prefix", '"site a:"', allowed, prefix="site a:")
        self.expect("prefix", '"a\\u0000"', allowed, prefix="a\0")
        self.expect("prefix", "1", "expected a string", prefix=1)
        long = "p" * 101
        self.expect("prefix", '"' + long[:76] + '...', allowed, prefix=long)  # shown cut short
        server, _ = self.load({"redis": {"prefix": "p" * 100}})
        self.assertEqual(server.redis.prefix, "p" * 100)

    def test_instance(self) -> None:
        allowed = "expected 1 to 100 characters without spaces or control characters"
        self.expect("instance", '""', allowed, instance="")
        self.expect("instance", '"chat\\n1"', allowed, instance="chat\n1")
        self.expect("instance", "[]", "expected a string", instance=[])

    def test_route(self) -> None:
        """Letters and digits only: it starts session ids, which a proxy's regex matches."""
        allowed = "expected 1 to 16 letters or digits"
        self.expect("route", '""', allowed, route="")
        self.expect("route", '"n-1"', allowed, route="n-1")
        self.expect("route", '"' + "r" * 17 + '"', allowed, route="r" * 17)
        self.expect("route", "1", "expected a string", route=1)

    def test_tls(self) -> None:
        self.expect("tls", '"yes"', "expected true or false", tls="yes")
        self.expect("tls", "1", "expected true or false", tls=1)

    def test_ca_file_needs_tls(self) -> None:
        self.write("ca.pem", "x")
        self.expect("ca_file", '"ca.pem"', 'only with "tls": true', ca_file="ca.pem")
        self.expect("ca_file", '"ca.pem"', 'only with "tls": true', ca_file="ca.pem", tls=False)

    def test_ca_file_must_exist(self) -> None:
        path = os.path.join(self.folder, "server.cfg")
        self.assertEqual(
            self.redis_error(tls=True, ca_file="missing.pem"),
            f"{path}: redis.ca_file: File does not exist: {os.path.join(self.folder, 'missing.pem')}",
        )
        os.makedirs(os.path.join(self.folder, "a-folder"))
        self.assertIn("redis.ca_file: File does not exist",
                      self.redis_error(tls=True, ca_file="a-folder"))
        self.expect("ca_file", '"ca\\u0000.pem"', "expected a file path without NUL characters",
                    tls=True, ca_file="ca\0.pem")

    def test_unreadable_ca_file_is_refused(self) -> None:
        """A CA file the server cannot read is refused at start (as root: checked as ``nobody``)."""
        ca = self.write("ca.pem", "x")
        os.chmod(ca, 0)
        text = self.error_as_nobody({"redis": {"tls": True, "ca_file": "ca.pem"}})
        self.assertIn("redis.ca_file: File is not readable: " + ca, text)

    def test_errors_are_config_errors_on_one_line(self) -> None:
        e = self.assertRaises(ConfigError, self.load, {"redis": {"instance": "a\nb"}})
        self.assertNotIn("\n", str(e))
