"""Tests for ilchat.config: every key of server.cfg / client.cfg and every error text."""

import json
import os
import pwd
from typing import Any, Dict, List, Optional, Tuple

from twisted.trial.unittest import SynchronousTestCase

from ilchat.config import ConfigError, load_configs

SERVER: Dict[str, Any] = {
    "protocol": "http",
    "port": 8888,
    "address": "127.0.0.1",
    "cert": "",
    "key": "",
    "dhparam": "",
    "log": "",
    "log_level": "info",
    "error_log": "",
    "sub_directory": "",
    "deletion_mode": 0,
    "deletion_unit": "",
    "deletion_value": "",
    "deletion_time": "",
}

CLIENT: Dict[str, Any] = {
    "name": "onscreen",
    "enable_osd": False,
    "enable_osc": True,
    "enable_browser_notifications": True,
    "conversation_idle_state_in_minutes": 1,
    "osd_intervall": 60,
    "chat_enabled": True,
    "play_invitation_sound": False,
    "auth": {"key": "k", "secret": "s"},
    "database": {
        "type": "mysql",
        "host": "localhost",
        "port": 3306,
        "name": "ilias",
        "user": "u",
        "pass": "p",
    },
}


def load_configs_as_nobody(server_path: str, client_paths: List[str]) -> Tuple[str, str]:
    """
    Run L{load_configs} in a forked child that has dropped root for ``nobody``, for the checks
    root would pass anyway (an unreadable file). Only for a root test process.

    Returns:
        C{("ConfigError", str(error))}, C{("loaded", "")}, or C{("failed", repr(exception))} when
        the child could not drop privileges or met another exception.
    """
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child ends with os._exit, never returns into trial)
        result = ("failed", "")
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                load_configs(server_path, client_paths)
                result = ("loaded", "")
            except ConfigError as e:
                result = ("ConfigError", str(e))
        except BaseException as e:
            result = ("failed", repr(e))
        finally:
            os.write(write_end, json.dumps(result).encode("utf-8"))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    outcome, text = json.loads(data)
    return outcome, text


class ConfigTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def write(self, name: str, content: Any) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def load(
        self,
        server: Optional[Dict[str, Any]] = None,
        clients: Optional[List[Dict[str, Any]]] = None,
        drop: tuple = (),
    ):
        data = dict(SERVER, **(server or {}))
        for key in drop:
            data.pop(key)
        server_path = self.write("server.cfg", data)
        paths = []
        for i, client in enumerate(clients or [{}]):
            paths.append(self.write(f"client{i}.cfg", dict(CLIENT, **client)))
        return load_configs(server_path, paths)

    def error(self, *args, **kwargs) -> str:
        e = self.assertRaises(ConfigError, self.load, *args, **kwargs)
        text = str(e)
        self.assertNotIn("\n", text)
        return text

    def error_as_nobody(self, server: Dict[str, Any]) -> str:
        """
        The error for C{server} when it names an unreadable file. Root reads any file, so as root
        (CI) the configuration is loaded in a forked child that has become ``nobody``.
        """
        if os.getuid() != 0:
            return self.error(server)
        server_path = self.write("server.cfg", dict(SERVER, **server))
        client_path = self.write("client0.cfg", CLIENT)
        for path in (server_path, client_path):
            os.chmod(path, 0o644)
        # nobody must get to the files: trial's temp folders are private (mkdtemp, 0700).
        folder = self.folder
        while folder.startswith(os.getcwd() + os.sep):
            os.chmod(folder, os.stat(folder).st_mode | 0o001)
            folder = os.path.dirname(folder)
        # Root loads these files (it reads anything). That also imports what the child needs
        # lazily (the utf-8-sig codec): nobody may not be able to read the Python library.
        load_configs(server_path, [client_path])
        outcome, text = load_configs_as_nobody(server_path, [client_path])
        self.assertEqual(outcome, "ConfigError", text)
        self.assertNotIn("\n", text)
        return text


class LoadingTests(ConfigTestCase):
    def test_ilias_readme_example_loads_with_typed_values(self) -> None:
        """The files ILIAS writes load as typed objects with the Node defaults filled in."""
        server, clients = self.load()
        self.assertEqual(server.protocol, "http")
        self.assertEqual(server.port, 8888)
        self.assertEqual(server.address, "127.0.0.1")
        self.assertEqual(server.log, "chat.log")
        self.assertEqual(server.error_log, "chatError.log")
        self.assertEqual(server.log_level, "info")
        self.assertEqual(server.sub_directory, "")
        self.assertFalse(server.purge_enabled)
        self.assertIsNone(server.cert)
        [client] = clients
        self.assertEqual(client.name, "onscreen")
        self.assertEqual((client.auth_key, client.auth_secret), ("k", "s"))
        self.assertEqual(client.database.type, "mysql")
        self.assertEqual(client.database.password, "p")
        self.assertEqual(client.database.port, 3306)
        self.assertTrue(client.enable_osc)

    def test_missing_server_config_argument_uses_ilias_text(self) -> None:
        """No server config gives the Node server's exact text."""
        e = self.assertRaises(ConfigError, load_configs, None, [])
        self.assertEqual(str(e), "Required: Server-Config file")

    def test_missing_client_config_argument_uses_ilias_text(self) -> None:
        """A server config without any client config gives the Node server's exact text."""
        path = self.write("server.cfg", SERVER)
        e = self.assertRaises(ConfigError, load_configs, path, [])
        self.assertEqual(str(e), "Required: Client-Config file")

    def test_missing_file_uses_ilias_text(self) -> None:
        """A path that does not exist gives "File does not exist: <path>"."""
        path = os.path.join(self.folder, "nope.cfg")
        e = self.assertRaises(ConfigError, load_configs, path, [path])
        self.assertEqual(str(e), f"File does not exist: {path}")

    def test_invalid_json_names_file_line_and_column(self) -> None:
        """Broken JSON names the file, the line and the column instead of a traceback."""
        path = self.write("server.cfg", '{\n  "port": 8888,\n  "protocol" "http"\n}')
        e = self.assertRaises(ConfigError, load_configs, path, [path])
        self.assertIn(path, str(e))
        self.assertIn("line 3 column 14", str(e))

    def test_top_level_must_be_an_object(self) -> None:
        """A JSON list is refused with the file named."""
        path = self.write("server.cfg", "[]")
        e = self.assertRaises(ConfigError, load_configs, path, [path])
        self.assertIn("JSON object", str(e))

    def test_several_clients_load_in_order(self) -> None:
        """Client configs keep their command-line order."""
        _, clients = self.load(clients=[{"name": "a"}, {"name": "b"}])
        self.assertEqual([c.name for c in clients], ["a", "b"])

    def test_duplicate_client_name_is_refused(self) -> None:
        """Two client configs with the same name would share namespaces: refused, both files named."""
        text = self.error(clients=[{"name": "a"}, {"name": "a"}])
        self.assertIn("client0.cfg", text)
        self.assertIn("client1.cfg", text)
        self.assertIn('name = "a"', text)


class ServerKeyTests(ConfigTestCase):
    def test_port_out_of_range_names_file_key_value_and_range(self) -> None:
        """Port 70000 is refused with the file, key, value and the allowed range."""
        text = self.error({"port": 70000})
        self.assertIn("server.cfg", text)
        self.assertIn("port = 70000", text)
        self.assertIn("1 to 65535", text)

    def test_port_zero_is_refused(self) -> None:
        """Port 0 is not a port an operator means."""
        self.assertIn("port = 0", self.error({"port": 0}))

    def test_port_true_is_not_one(self) -> None:
        """A JSON true is not read as port 1."""
        self.assertIn("port = true", self.error({"port": True}))

    def test_port_as_digit_string_is_accepted(self) -> None:
        """PHP may write the port from a form field as a string."""
        server, _ = self.load({"port": "8585"})
        self.assertEqual(server.port, 8585)

    def test_missing_port_is_required(self) -> None:
        """A missing port names the key."""
        self.assertIn("port is required", self.error(drop=("port",)))

    def test_protocol_must_be_http_or_https(self) -> None:
        """Only http and https are protocols."""
        text = self.error({"protocol": "ftp"})
        self.assertIn('protocol = "ftp"', text)
        self.assertIn("http, https", text)

    def test_address_is_required(self) -> None:
        """An empty address is refused."""
        self.assertIn("address", self.error({"address": ""}))

    def test_log_level_must_be_a_syslog_name(self) -> None:
        """log_level lists the allowed names."""
        text = self.error({"log_level": "verbose"})
        self.assertIn('log_level = "verbose"', text)
        self.assertIn("emerg, alert, crit, error, warning, notice, info, debug, silly", text)

    def test_missing_log_level_is_info(self) -> None:
        """As with Node, no log_level means info."""
        server, _ = self.load(drop=("log_level",))
        self.assertEqual(server.log_level, "info")

    def test_relative_log_paths_are_taken_from_the_config_folder(self) -> None:
        """A relative log path does not depend on the working directory."""
        server, _ = self.load({"log": "logs/chat.log", "error_log": "/var/log/e.log"})
        self.assertEqual(server.log, os.path.join(self.folder, "logs", "chat.log"))
        self.assertEqual(server.error_log, "/var/log/e.log")

    def test_database_timeout_and_journal_dir(self) -> None:
        """ilchat's own keys: defaults (30 s; the journal next to the error log), values, errors."""
        server, _ = self.load({"error_log": "/var/log/ilchat/e.log"})
        self.assertEqual(server.database_timeout, 30.0)
        self.assertEqual(server.journal_dir, "/var/log/ilchat")
        server, _ = self.load({"database_timeout": 5, "journal_dir": "spool"})
        self.assertEqual(server.database_timeout, 5.0)
        self.assertEqual(server.journal_dir, os.path.join(self.folder, "spool"))
        self.assertIn("database_timeout", self.error({"database_timeout": 0}))
        self.assertIn("database_timeout", self.error({"database_timeout": "soon"}))

    def test_sub_directory_is_normalised(self) -> None:
        """Slashes around sub_directory do not matter."""
        server, _ = self.load({"sub_directory": "chat/"})
        self.assertEqual(server.sub_directory, "/chat")
        server, _ = self.load({"sub_directory": "/"})
        self.assertEqual(server.sub_directory, "")

    def test_purge_settings_are_parsed(self) -> None:
        """deletion_* keys become the mode, unit, value and (hour, minute)."""
        server, _ = self.load(
            {"deletion_mode": "1", "deletion_unit": "months", "deletion_value": "3",
             "deletion_time": "03:05"}
        )
        self.assertTrue(server.purge_enabled)
        self.assertEqual(server.deletion_unit, "months")
        self.assertEqual(server.deletion_value, 3)
        self.assertEqual(server.deletion_time, (3, 5))

    def test_deletion_unit_month_is_accepted(self) -> None:
        """The Node server also accepts the singular "month"."""
        server, _ = self.load(
            {"deletion_mode": 1, "deletion_unit": "month", "deletion_value": 1,
             "deletion_time": "00:00"}
        )
        self.assertEqual(server.deletion_unit, "month")

    def test_bad_deletion_unit_is_refused(self) -> None:
        """An unknown unit would make Node delete everything; ilchat refuses it."""
        text = self.error(
            {"deletion_mode": 1, "deletion_unit": "fortnights", "deletion_value": 1,
             "deletion_time": "03:00"}
        )
        self.assertIn('deletion_unit = "fortnights"', text)
        self.assertIn("days, weeks, months, month, years", text)

    def test_bad_deletion_time_is_refused(self) -> None:
        """deletion_time must be HH:MM."""
        text = self.error(
            {"deletion_mode": 1, "deletion_unit": "days", "deletion_value": 1,
             "deletion_time": "24:00"}
        )
        self.assertIn('deletion_time = "24:00"', text)
        self.assertIn("HH:MM", text)

    def test_purge_needs_deletion_value(self) -> None:
        """With the purge on, a value is required."""
        text = self.error(
            {"deletion_mode": 1, "deletion_unit": "days", "deletion_time": "03:00"},
            drop=("deletion_value",),
        )
        self.assertIn("deletion_value is required", text)


class IrcKeyTests(ConfigTestCase):
    """server.cfg ``irc``: the MOTD file, ADMIN lines and operator blocks."""

    HASH = "$2b$04$JAIvt839qjpQAYlQ9PcBqOqKeewk/6/fqwL9a5pxus.Z4kSy1YwGK"  # "secret"

    def test_motd_file_lines_are_the_motd(self) -> None:
        """``motd_file`` is read at start (relative to server.cfg), UTF-8, one line per MOTD line."""
        with open(os.path.join(self.folder, "motd.txt"), "w", encoding="utf-8") as f:
            f.write("Willkommen, Jürgen!\n\nAsk in #onscreen-1.\n")
        server, _ = self.load({"irc": {"motd_file": "motd.txt"}})
        self.assertEqual(server.irc.motd, ("Willkommen, Jürgen!", "", "Ask in #onscreen-1."))
        self.assertEqual(server.irc.motd_file, os.path.join(self.folder, "motd.txt"))

    def test_motd_file_missing_or_not_utf8_or_with_motd(self) -> None:
        """A missing file, a file that is not UTF-8, or both keys: one line naming the key."""
        self.assertIn("irc.motd_file", self.error({"irc": {"motd_file": "nothere.txt"}}))
        with open(os.path.join(self.folder, "latin.txt"), "wb") as f:
            f.write(b"J\xfcrgen\n")
        self.assertIn("UTF-8", self.error({"irc": {"motd_file": "latin.txt"}}))
        self.assertIn("either motd or motd_file",
                      self.error({"irc": {"motd_file": "latin.txt", "motd": "hi"}}))

    def test_history_keys_are_validated(self) -> None:
        """``history_on_join`` 0 to 100 (default 0) and ``chathistory_limit`` 1 to 1,000 (100)."""
        server, _ = self.load({"irc": {}})
        self.assertEqual((server.irc.history_on_join, server.irc.chathistory_limit), (0, 100))
        server, _ = self.load({"irc": {"history_on_join": 20, "chathistory_limit": 500}})
        self.assertEqual((server.irc.history_on_join, server.irc.chathistory_limit), (20, 500))
        self.assertIn("irc.history_on_join", self.error({"irc": {"history_on_join": 101}}))
        self.assertIn("irc.history_on_join", self.error({"irc": {"history_on_join": "20"}}))
        self.assertIn("irc.chathistory_limit", self.error({"irc": {"chathistory_limit": 0}}))

    def test_server_password_only_in_open_mode(self) -> None:
        """``password`` (open mode's server password) is a non-empty string, never in ilias mode,
        and the error does not show it."""
        server, _ = self.load({"irc": {"auth": "open"}})
        self.assertIsNone(server.irc.password)
        server, _ = self.load({"irc": {"auth": "open", "password": "s3cret"}})
        self.assertEqual(server.irc.password, "s3cret")
        self.assertNotIn("s3cret", repr(server.irc))
        self.assertIn("irc.password", self.error({"irc": {"auth": "open", "password": ""}}))
        self.assertIn("irc.password", self.error({"irc": {"auth": "open", "password": 5}}))
        text = self.error({"irc": {"auth": "ilias", "password": "s3cret"}})
        self.assertIn("irc.password", text)
        self.assertIn("open", text)
        self.assertNotIn("s3cret", text)

    def test_guests_only_in_ilias_mode(self) -> None:
        """``guests`` is a boolean for ``ilias`` mode, and turns local channels on by default."""
        server, _ = self.load({"irc": {"auth": "ilias"}})
        self.assertEqual((server.irc.guests, server.irc.local_channels), (False, False))
        server, _ = self.load({"irc": {"auth": "ilias", "guests": True}})
        self.assertEqual((server.irc.guests, server.irc.local_channels), (True, True))
        server, _ = self.load({"irc": {"auth": "ilias", "guests": True, "local_channels": False}})
        self.assertFalse(server.irc.local_channels)
        text = self.error({"irc": {"auth": "ilias", "guests": "yes"}})
        self.assertIn("irc.guests", text)
        self.assertIn("expected true or false", text)
        text = self.error({"irc": {"auth": "open", "guests": True}})
        self.assertIn("irc.guests", text)
        self.assertIn('"auth": "ilias"', text)

    def test_names_and_admin_lines(self) -> None:
        server, _ = self.load({"irc": {"server_name": "irc.example.org", "network_name": "Campus",
                                       "admin_location": "IT services", "admin_email": "it@example.org"}})
        irc = server.irc
        self.assertEqual((irc.server_name, irc.network_name, irc.admin_location, irc.admin_email),
                         ("irc.example.org", "Campus", "IT services", "it@example.org"))

    def test_operator_blocks(self) -> None:
        """An operator has a name, a bcrypt hash and user@host masks; the hash never shows."""
        server, _ = self.load({"irc": {"operators": [
            {"name": "admin", "hash": self.HASH, "hosts": ["*@127.0.0.1", "*@::1"]}]}})
        (operator,) = server.irc.operators
        self.assertEqual((operator.name, operator.password_hash, operator.hosts),
                         ("admin", self.HASH, ("*@127.0.0.1", "*@::1")))
        self.assertNotIn(self.HASH, repr(operator))
        text = self.error({"irc": {"operators": [{"name": "admin", "hash": "secret", "hosts": ["*"]}]}})
        self.assertIn("irc.operators[0].hash", text)
        self.assertNotIn("secret", text)
        self.assertIn("irc.operators[0].hosts", self.error(
            {"irc": {"operators": [{"name": "admin", "hash": self.HASH, "hosts": []}]}}))
        self.assertIn("irc.operators[1].name", self.error({"irc": {"operators": [
            {"name": "admin", "hash": self.HASH, "hosts": ["*"]},
            {"name": "admin", "hash": self.HASH, "hosts": ["*"]}]}}))

    def test_operators_rights_in_chat_rooms(self) -> None:
        """oper_kick and oper_ban: true by default, booleans only, each on its own."""
        server, _ = self.load({"irc": {}})
        self.assertEqual((server.irc.oper_kick, server.irc.oper_ban), (True, True))
        server, _ = self.load({"irc": {"oper_kick": True, "oper_ban": False}})
        self.assertEqual((server.irc.oper_kick, server.irc.oper_ban), (True, False))
        self.assertIn("irc.oper_ban", self.error({"irc": {"oper_ban": "yes"}}))


class HttpsTests(ConfigTestCase):
    def test_https_needs_cert(self) -> None:
        """https without a cert is refused before anything listens."""
        self.assertIn("cert is required", self.error({"protocol": "https"}))

    def test_https_cert_must_exist(self) -> None:
        """A missing cert file is named with the ILIAS text."""
        text = self.error({"protocol": "https", "cert": "/nonexistent/cert.pem", "key": "x"})
        self.assertIn("cert: File does not exist: /nonexistent/cert.pem", text)

    def test_https_key_must_exist(self) -> None:
        """A missing key file is named."""
        cert = self.write("cert.pem", "x")
        text = self.error({"protocol": "https", "cert": cert, "key": "key.pem"})
        self.assertIn("key: File does not exist: " + os.path.join(self.folder, "key.pem"), text)

    def test_https_dhparam_is_optional_but_must_exist_when_given(self) -> None:
        """dhparam may be empty; a named dhparam must exist."""
        self.write("cert.pem", "x")
        self.write("key.pem", "x")
        server, _ = self.load({"protocol": "https", "cert": "cert.pem", "key": "key.pem"})
        self.assertEqual(server.cert, os.path.join(self.folder, "cert.pem"))
        self.assertIsNone(server.dhparam)
        text = self.error(
            {"protocol": "https", "cert": "cert.pem", "key": "key.pem", "dhparam": "dh.pem"}
        )
        self.assertIn("dhparam: File does not exist", text)

    def test_unreadable_key_is_refused(self) -> None:
        """
        A key file the server cannot read is refused at start. Root reads any file, so as root
        (CI) the configuration is loaded in a forked child that has become ``nobody``.
        """
        self.write("cert.pem", "x")
        key = self.write("key.pem", "x")
        os.chmod(key, 0)
        text = self.error_as_nobody({"protocol": "https", "cert": "cert.pem", "key": "key.pem"})
        self.assertIn("not readable", text)


class ClientKeyTests(ConfigTestCase):
    def test_database_types_normalise_to_mysql(self) -> None:
        """mysql, mariadb, innodb and "" all mean MySQL/MariaDB through mysqlclient."""
        for db_type in ("mysql", "mariadb", "innodb", "", "MySQL"):
            _, [client] = self.load(clients=[{"database": dict(CLIENT["database"], type=db_type)}])
            self.assertEqual(client.database.type, "mysql")

    def test_sqlite_name_is_a_path_relative_to_the_config_file(self) -> None:
        """An SQLite database file lives next to the config unless the path is absolute."""
        _, [client] = self.load(clients=[{"database": {"type": "sqlite", "name": "data/x.db"}}])
        self.assertEqual(client.database.type, "sqlite")
        self.assertEqual(client.database.name, os.path.join(self.folder, "data", "x.db"))

    def test_unknown_database_type_is_refused(self) -> None:
        """postgres is not supported and says which types are."""
        text = self.error(clients=[{"database": {"type": "postgres", "name": "x"}}])
        self.assertIn('database.type = "postgres"', text)
        self.assertIn("mysql, mariadb, innodb, sqlite", text)

    def test_database_port_must_be_a_port(self) -> None:
        """The key path of nested keys is shown."""
        text = self.error(clients=[{"database": dict(CLIENT["database"], port=-1)}])
        self.assertIn("database.port = -1", text)

    def test_auth_key_is_required(self) -> None:
        """Without credentials no backend call could be checked."""
        text = self.error(clients=[{"auth": {"secret": "s"}}])
        self.assertIn("client0.cfg: auth.key is required", text)

    def test_missing_name_is_required(self) -> None:
        """The client name is the namespace; it is required."""
        text = self.error(clients=[{"name": None}])
        self.assertIn("name is required", text)

    def test_identity_defaults_to_ilias_session(self) -> None:
        """Secure by default: the ILIAS session decides; PHPSESSID; the client id is the name."""
        _, [client] = self.load()
        self.assertEqual(
            (client.identity, client.session_cookie, client.ilias_client_id, client.anonymous_user_id),
            ("ilias-session", "PHPSESSID", client.name, 13),
        )
        _, [client] = self.load(clients=[{"identity": "trust", "session_cookie": "ILIAS_SID",
                                          "ilias_client_id": "myilias"}])
        self.assertEqual(
            (client.identity, client.session_cookie, client.ilias_client_id),
            ("trust", "ILIAS_SID", "myilias"),
        )

    def test_identity_must_be_a_known_mode(self) -> None:
        """A typo is refused, naming the file, the key and both modes."""
        text = self.error(clients=[{"identity": "ilias"}])
        self.assertIn('client0.cfg: identity = "ilias" is not allowed; one of ilias-session, trust', text)
        text = self.error(clients=[{"identity": True}])
        self.assertIn("identity = true is not allowed", text)

    def test_private_rooms_is_a_known_mode(self) -> None:
        """ILIAS 8 private rooms: detected by default, on or off; anything else is refused."""
        _, [client] = self.load()
        self.assertEqual(client.private_rooms, "auto")
        for mode in ("auto", "on", "off"):
            _, [client] = self.load(clients=[{"private_rooms": mode}])
            self.assertEqual(client.private_rooms, mode)
        text = self.error(clients=[{"private_rooms": "yes"}])
        self.assertIn('client0.cfg: private_rooms = "yes" is not allowed; one of auto, on, off', text)
        text = self.error(clients=[{"private_rooms": True}])
        self.assertIn("private_rooms = true is not allowed", text)

    def test_escape_messages_is_a_known_mode(self) -> None:
        """HTML escaping of message texts: decided from the database by default, on or off."""
        _, [client] = self.load()
        self.assertEqual(client.escape_messages, "auto")
        for mode in ("auto", "on", "off"):
            _, [client] = self.load(clients=[{"escape_messages": mode}])
            self.assertEqual(client.escape_messages, mode)
        text = self.error(clients=[{"escape_messages": "ilias9"}])
        self.assertIn('client0.cfg: escape_messages = "ilias9" is not allowed; one of auto, on, off',
                      text)
        text = self.error(clients=[{"escape_messages": False}])
        self.assertIn("escape_messages = false is not allowed", text)

    def test_session_cookie_must_be_a_cookie_name(self) -> None:
        """Separators and spaces cannot be in a cookie name; an empty one is refused."""
        for bad in ("PHP SESSID", "a;b", "a=b", ""):
            text = self.error(clients=[{"session_cookie": bad}])
            self.assertIn("client0.cfg: session_cookie = ", text)
        text = self.error(clients=[{"ilias_client_id": ""}])
        self.assertIn('ilias_client_id = "" is not allowed', text)
        text = self.error(clients=[{"anonymous_user_id": "x"}])
        self.assertIn('anonymous_user_id = "x" is not allowed; expected an integer of at least 0', text)
        _, [client] = self.load(clients=[{"anonymous_user_id": "7"}])
        self.assertEqual(client.anonymous_user_id, 7)

    def test_database_block_is_required(self) -> None:
        """A client without a database block is refused."""
        text = self.error(clients=[{"database": None}])
        self.assertIn("database is required", text)


class SampleConfigTests(SynchronousTestCase):
    def test_sample_configs_in_etc_load(self) -> None:
        """etc/server.cfg and etc/client.cfg (what scripts/run uses) are valid, data under ./data."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        server, [client] = load_configs(
            os.path.join(root, "etc", "server.cfg"), [os.path.join(root, "etc", "client.cfg")]
        )
        self.assertEqual((server.protocol, server.address, server.port), ("http", "127.0.0.1", 8888))
        self.assertEqual(server.log, os.path.join(root, "data", "chat.log"))
        self.assertEqual(server.error_log, os.path.join(root, "data", "chatError.log"))
        self.assertEqual(client.database.type, "sqlite")
        self.assertEqual(client.database.name, os.path.join(root, "data", "ilchat.sqlite3"))


class HostileInputTests(ConfigTestCase):
    """Inputs that used to end in a traceback get the one-line error and nothing else."""

    def test_deep_nesting_is_one_line(self) -> None:
        """100,000 nested lists (Python's parser would recurse to death) and 40 nested objects."""
        path = self.write("server.cfg", '{"irc": ' + "[" * 100_000 + "]" * 100_000 + "}")
        error = str(self.assertRaises(ConfigError, load_configs, path, [path]))
        self.assertEqual(error, f"{path}: invalid JSON: nested too deeply")
        nested: Any = {}
        for _ in range(40):
            nested = {"a": nested}
        error = self.error(server={"irc": nested})
        self.assertIn("server.cfg: invalid JSON: nested more than 32 levels deep", error)

    def test_five_thousand_digit_number_is_one_line(self) -> None:
        """A 5,000-digit integer is more than Python converts; the file is named."""
        server = json.dumps(SERVER).replace('"port": 8888', '"port": ' + "9" * 5000)
        path = self.write("server.cfg", server)
        error = str(self.assertRaises(ConfigError, load_configs, path, [path]))
        self.assertTrue(error.startswith(f"{path}: invalid JSON: Exceeds the limit"), error)
        self.assertLess(len(error) - len(path), 200)

    def test_huge_integer_for_a_float_key(self) -> None:
        """10**400 for a number of messages per second: too large for a float, said so."""
        error = self.error(server={"network": {"message_rate": 10**400}})
        self.assertIn("server.cfg: network.message_rate = 1000000000", error)
        self.assertIn("is not allowed; expected a number of at least 0 (this one is too large)", error)
        self.assertLess(len(error) - len(self.folder), 200)  # the value is cut short

    def test_infinite_and_not_a_number_are_refused(self) -> None:
        """NaN and Infinity are not JSON; 1e999 parses to infinity, which no key takes."""
        for literal in ("NaN", "Infinity", "-Infinity"):
            path = self.write("server.cfg", json.dumps(SERVER)[:-1] + ', "x": ' + literal + "}")
            error = str(self.assertRaises(ConfigError, load_configs, path, [path]))
            self.assertEqual(error, f"{path}: invalid JSON: {literal} is not a number JSON allows")
        text = json.dumps(dict(SERVER, network={"message_rate": 1})).replace(
            '"message_rate": 1', '"message_rate": 1e999'
        )
        path = self.write("server.cfg", text)
        client = self.write("client.cfg", CLIENT)
        error = str(self.assertRaises(ConfigError, load_configs, path, [client]))
        self.assertEqual(
            error,
            f"{path}: network.message_rate = Infinity is not allowed; expected a number of at least 0",
        )
        path = self.write("server.cfg", json.dumps(SERVER).replace('"port": 8888', '"port": 1e999'))
        error = str(self.assertRaises(ConfigError, load_configs, path, [client]))
        self.assertIn("port = Infinity is not allowed", error)

    def test_nul_in_a_path(self) -> None:
        """A NUL cannot be in a file name: the key is named, no system call sees it."""
        error = self.error(server={"log": "chat\u0000.log"})
        self.assertIn('server.cfg: log = "chat\\u0000.log" is not allowed; expected a file path '
                      "without NUL characters", error)
        error = self.error(server={"protocol": "https", "cert": "a\u0000.pem", "key": "k.pem"})
        self.assertIn("cert = ", error)
        error = self.error(clients=[{"database": {"type": "sqlite", "name": "db\u0000.sqlite"}}])
        self.assertIn("client0.cfg: database.name = ", error)
        self.assertIn("without NUL characters", error)
        error = str(self.assertRaises(ConfigError, load_configs, "/etc/\u0000server.cfg", ["x"]))
        self.assertIn("File does not exist", error)

    def test_network_limits_have_defaults_and_bounds(self) -> None:
        """The new network keys: defaults when absent, refused outside their range."""
        server, _ = self.load(server={"network": {}})
        network = server.network
        self.assertEqual(
            (network.max_connections_per_ip, network.max_http_connections_per_ip,
             network.ilias_message_rate, network.ilias_message_burst, network.header_timeout,
             network.body_timeout, network.max_headers, network.max_header_bytes),
            (2000, 4000, 10.0, 30.0, 30.0, 60.0, 100, 16384),
        )
        server, _ = self.load(server={"network": {"ilias_message_rate": 0, "max_headers": 50,
                                                  "allowed_origins": ["*"]}})
        self.assertEqual(server.network.ilias_message_rate, 0.0)
        self.assertEqual(server.network.max_headers, 50)
        self.assertEqual(server.network.allowed_origins, ("*",))
        self.assertIn("network.max_headers = 5 is not allowed; expected an integer from 10 to 10000",
                      self.error(server={"network": {"max_headers": 5}}))
        self.assertIn("network.header_timeout = 0 is not allowed",
                      self.error(server={"network": {"header_timeout": 0}}))


# --- property-based: any JSON-ish file loads or gets a ConfigError, never anything else ----------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats() | st.text(max_size=12) | st.sampled_from(["", "0", "1", "8888", "*", "https",
                                                          "sqlite", "mysql", "03:00", "days"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
#: Where a value may be put: every key ilchat reads, at its place in the file.
_SERVER_KEYS = [(k,) for k in SERVER] + [("network",), ("irc",), ("redis",)] + [
    ("network", k) for k in ("allow", "trusted_proxies", "allowed_origins", "max_connections_per_ip",
                             "message_rate", "message_burst", "max_name_length", "max_message_length",
                             "max_http_connections_per_ip", "ilias_message_rate", "ilias_message_burst",
                             "header_timeout", "body_timeout", "max_headers", "max_header_bytes")
] + [("irc", k) for k in ("address", "port", "plain", "tls_port", "cert", "key", "motd", "rooms",
                           "auth", "webirc", "limits", "server_name", "local_channels", "motd_file",
                           "admin_location", "admin_email", "operators", "network_name", "oper_kick",
                           "oper_ban", "websocket", "history_on_join", "chathistory_limit", "password")] + [
    ("irc", "limits", k) for k in ("flood_rate", "recvq", "max_line", "ping_interval")
] + [("irc", "rooms", "onscreen")] + [
    ("redis", k) for k in ("host", "port", "password", "db", "prefix", "instance", "tls", "ca_file",
                          "route")
] + [("listen",), ("metrics",)] + [("metrics", k) for k in ("address", "port", "listen")]
_CLIENT_KEYS = [(k,) for k in CLIENT] + [("auth", "key"), ("auth", "secret"), ("standalone",)] + [
    ("database", k) for k in ("type", "host", "port", "name", "user", "pass")
] + [("standalone", k) for k in ("title", "window_title", "welcome", "info", "rooms",
                                     "history", "files_folder", "files_max_bytes", "files_types")]


def _put(document: Dict[str, Any], where: Tuple[str, ...], value: Any) -> Dict[str, Any]:
    node = document
    for key in where[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[where[-1]] = value
    return document


def _with_changes(base: Dict[str, Any], keys: List[Tuple[str, ...]]) -> Any:
    change = st.tuples(st.sampled_from(keys), _VALUES)
    return st.lists(change, max_size=4).map(
        lambda changes: _apply(json.loads(json.dumps(base)), changes)
    )


def _apply(document: Dict[str, Any], changes: List[Tuple[Tuple[str, ...], Any]]) -> Dict[str, Any]:
    for where, value in changes:
        _put(document, where, value)
    return document


def _as_text(document: Any) -> Any:
    """The document as JSON, sometimes cut or with a stray character, as an editor may leave it."""
    text = json.dumps(document, allow_nan=True)
    return st.one_of(
        st.just(text),
        st.integers(0, len(text)).map(lambda n: text[:n]),
        st.tuples(st.integers(0, len(text)), st.characters()).map(
            lambda pair: text[: pair[0]] + pair[1] + text[pair[0]:]
        ),
    )


class PropertyTests(ConfigTestCase):
    """Hypothesis: whatever the files hold, the loader answers with configs or one ConfigError."""

    def check(self, server_text: str, client_text: str) -> None:
        server = self.write("server.cfg", server_text)
        client = self.write("client.cfg", client_text)
        try:
            load_configs(server, [client])
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
            self.assertTrue(str(e))

    @settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.one_of(_with_changes(SERVER, _SERVER_KEYS), _VALUES).flatmap(_as_text),
        st.one_of(_with_changes(CLIENT, _CLIENT_KEYS), _VALUES).flatmap(_as_text),
    )
    def test_any_config_loads_or_is_a_config_error(self, server_text: str, client_text: str) -> None:
        self.check(server_text, client_text)

    @settings(max_examples=100, deadline=2000)
    @given(st.text(max_size=200), st.binary(max_size=200))
    def test_any_text_or_bytes_loads_or_is_a_config_error(self, text: str, raw: bytes) -> None:
        self.check(text, json.dumps(CLIENT))
        server = self.write("server.cfg", json.dumps(SERVER))
        client = os.path.join(self.folder, "raw.cfg")
        with open(client, "wb") as f:
            f.write(raw)
        try:
            load_configs(server, [client])
        except ConfigError as e:
            self.assertNotIn("\n", str(e))
