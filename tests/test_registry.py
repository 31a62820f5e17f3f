"""The backend registry: lazy lookup by name, install hints, plugins."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hposdk import BackendNotFoundError, MissingExtraError
from hposdk._imports import require
from hposdk.backends import BackendEntry, available_backends, get_backend, register_backend
from hposdk.backends.local import LocalBackend


def test_builtin_backends_are_known_without_importing_them() -> None:
    names = set(available_backends())
    assert {"local", "ray", "clearml"} <= names
    assert get_backend("local") is LocalBackend


def test_a_missing_engine_names_the_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_backend_mod.py").write_text("import fake_engine_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    register_backend(BackendEntry("fake", "fake_backend_mod:FakeBackend", "fake", "fake_engine_not_installed", "t"))
    with pytest.raises(MissingExtraError, match=r"`pip install hposdk\[fake\]`"):
        get_backend("fake")
    sys.modules.pop("fake_backend_mod", None)


def test_require_gives_the_httpx_style_hint() -> None:
    with pytest.raises(MissingExtraError) as info:
        require("surely_not_installed_pkg.sub", "ray", "backend='ray'")
    assert str(info.value) == (
        "Using backend='ray', but the 'surely_not_installed_pkg' package is not installed. "
        "Make sure to install hposdk using `pip install hposdk[ray]`."
    )
    assert isinstance(info.value, ImportError)


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(BackendNotFoundError, match=r"known backends: .*local.*Did you mean 'local'"):
        get_backend("locl")


def test_builtin_names_resolve_without_scanning_installed_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Scanning entry points reads every installed package's metadata (~8 ms); a study on a
    # built-in backend must not pay it.
    import hposdk.backends._registry as registry

    def scan(**_: object) -> list[object]:
        raise AssertionError("entry points scanned for a built-in backend")

    monkeypatch.setattr(registry, "entry_points", scan)
    assert get_backend("local") is LocalBackend


def test_a_plugin_name_is_found_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    import hposdk.backends._registry as registry

    class EntryPoint:
        name, value = "myplugin", "hposdk.backends.local:LocalBackend"

    calls: list[str] = []

    def scan(group: str) -> list[EntryPoint]:
        calls.append(group)
        return [EntryPoint()]

    monkeypatch.setattr(registry, "entry_points", scan)
    assert get_backend("myplugin") is LocalBackend
    assert calls == ["hposdk.backends"]
    with pytest.raises(BackendNotFoundError, match="myplugin"):  # unknown names list plugins too
        get_backend("nope")
