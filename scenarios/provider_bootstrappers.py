"""A service provider registered on every request that appends a closure to a
class-level bootstrapper list (seed 004: dcat-admin's ``$this->commands()``
calls ``Artisan::starting(fn)``, which does ``static::$bootstrappers[] = $callback``).

Swoole Tracker showed it as ServiceProvider.php:403 => [1392] in every loop.

Expected: leak=yes kind=reachable line=scenarios/provider_bootstrappers.py:28
Holder: provider_bootstrappers.Console.bootstrappers role=callback-list
"""

from __future__ import annotations


class Console:
    bootstrappers: list = []

    @classmethod
    def starting(cls, callback) -> None:
        cls.bootstrappers.append(callback)


class ServiceProvider:
    def __init__(self, app: dict) -> None:
        self.app = app

    def commands(self, commands: list[str]) -> None:
        # A fresh closure per call, kept forever by Console.bootstrappers.
        Console.starting(lambda artisan: artisan.resolve(commands))


class AdminServiceProvider(ServiceProvider):
    commands_list = ["admin:install", "admin:publish", "admin:menu"]

    def register(self) -> None:
        self.commands(self.commands_list)


def iteration() -> None:
    # laravels.register_providers: the provider is registered again per request.
    AdminServiceProvider({"request": "GET /admin"}).register()
