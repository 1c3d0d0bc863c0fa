"""The ``ilchat.config`` package: what it exports, and that each section's defaults live once."""

import importlib
import os
import pkgutil

import attrs
from twisted.trial.unittest import SynchronousTestCase

import ilchat.config
from tests.test_config import ConfigTestCase

#: Every public name of ``ilchat.config`` (all that other modules imported from the former single
#: ``ilchat/config.py``, and ``default_of``), with the package module that defines it.
_EXPORTS = {
    "ConfigError": "reader",
    "default_of": "reader",
    "load_configs": "loading",
    "load_server_config": "loading",
    "load_client_config": "loading",
    "MAX_DEPTH": "loading",
    "ServerConfig": "server",
    "LOG_LEVELS": "server",
    "DELETION_UNITS": "server",
    "ClientConfig": "client",
    "DatabaseConfig": "client",
    "IDENTITY_MODES": "client",
    "NetworkConfig": "network",
    "IrcConfig": "irc",
    "IrcLoginLimits": "irc",
    "IrcOperator": "irc",
    "WebircGateway": "irc",
    "MetricsConfig": "metrics",
    "RedisConfig": "redis",
    "StandaloneConfig": "standalone",
    "StandaloneRoom": "standalone",
}


def _modules():
    for info in pkgutil.iter_modules(ilchat.config.__path__):
        yield importlib.import_module("ilchat.config." + info.name)


class ExportTests(SynchronousTestCase):
    def test_every_name_is_re_exported_from_its_module(self) -> None:
        """``from ilchat.config import X`` keeps working for every name, and is the same object."""
        for name, module in _EXPORTS.items():
            defined = getattr(importlib.import_module("ilchat.config." + module), name)
            self.assertIs(getattr(ilchat.config, name), defined, name)
            self.assertIn(name, ilchat.config.__all__)

    def test_all_lists_only_what_the_package_has(self) -> None:
        for name in ilchat.config.__all__:
            self.assertTrue(hasattr(ilchat.config, name), name)
        self.assertEqual(len(set(ilchat.config.__all__)), len(ilchat.config.__all__))

    def test_star_import(self) -> None:
        namespace: dict = {}
        exec("from ilchat.config import *", namespace)
        self.assertTrue(set(_EXPORTS) <= set(namespace))

    def test_no_module_over_500_lines(self) -> None:
        for module in _modules():
            with open(module.__file__) as f:
                self.assertLessEqual(len(f.readlines()), 500, module.__name__)

    def test_no_untyped_fields(self) -> None:
        """Every section is a typed class: no field is declared ``Any``."""
        classes = [value for module in _modules() for value in vars(module).values()
                   if attrs.has(value) and value.__module__ == module.__name__]
        self.assertGreaterEqual(len(classes), 10)
        for cls in classes:
            for field in attrs.fields(cls):
                self.assertNotIn("Any", str(field.type), f"{cls.__name__}.{field.name}")


class DefaultsTests(ConfigTestCase):
    """An empty section reads as its class's defaults: each default is written only there."""

    def test_empty_server_sections_are_the_class_defaults(self) -> None:
        server, _ = self.load({"network": {}, "irc": {}, "metrics": {}})
        self.assertEqual(server.network, ilchat.config.NetworkConfig())
        self.assertEqual(server.irc, ilchat.config.IrcConfig())
        self.assertEqual(server.metrics, ilchat.config.MetricsConfig())

    def test_empty_redis_section_is_the_class_defaults_but_the_instance(self) -> None:
        server, _ = self.load({"redis": {}})
        self.assertEqual(
            attrs.evolve(server.redis, instance=""), ilchat.config.RedisConfig()
        )

    def test_empty_standalone_section_is_the_class_defaults(self) -> None:
        _, (client,) = self.load(clients=[{"standalone": {}}])
        self.assertEqual(client.standalone, ilchat.config.StandaloneConfig())

    def test_server_keys_left_empty_are_the_class_defaults(self) -> None:
        """What ILIAS writes for "not set" (empty strings) gives the ServerConfig defaults."""
        server, (client,) = self.load()
        fields = attrs.fields(ilchat.config.ServerConfig)
        for name in ("log_level", "sub_directory", "deletion_mode", "database_timeout"):
            self.assertEqual(getattr(server, name), getattr(fields, name).default, name)
        self.assertEqual(os.path.basename(server.log), fields.log.default)
        self.assertEqual(os.path.basename(server.error_log), fields.error_log.default)
        client_fields = attrs.fields(ilchat.config.ClientConfig)
        for name in ("identity", "session_cookie", "anonymous_user_id"):
            self.assertEqual(getattr(client, name), getattr(client_fields, name).default, name)

    def test_every_log_level_has_a_twisted_level(self) -> None:
        """``ilchat.logs`` maps exactly the ``log_level`` names config accepts."""
        from ilchat.logs import LEVELS

        self.assertEqual(set(LEVELS), set(ilchat.config.LOG_LEVELS))
