"""Where the bundled catalog and default config are, in a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _bundled(name: str) -> Path:
    # A wheel carries them under aishell/_bundled; a source checkout (editable
    # install, tests) has them at the top of the repository.
    inside = _PACKAGE_DIR / "_bundled" / name
    if inside.is_dir():
        return inside
    return _PACKAGE_DIR.parent / name


def bundled_catalog_dir() -> Path:
    return _bundled("tools")


def bundled_config_dir() -> Path:
    return _bundled("config")


def bundled_packaging_dir() -> Path:
    """The systemd units and the cron file that keep the scheduler running."""
    return _bundled("packaging")
