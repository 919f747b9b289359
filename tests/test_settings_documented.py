"""Every setting is documented in the README, with its environment variables."""

from __future__ import annotations

import pytest

from casebase.config import SETTINGS, load_settings
from casebase.errors import ConfigError
from tests.conftest import REPO


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_setting_is_in_readme(setting):
    readme = (REPO / "README.md").read_text()
    for var in setting.env:
        assert f"`{var}`" in readme, f"{var} is not documented in README.md"


def test_defaults_and_overrides(tmp_path):
    s = load_settings({"CASEBASE_HOME": str(tmp_path), "CASEBASE_MAX_K": "50"})
    assert s.home == tmp_path.resolve()
    assert s.max_k == 50
    assert s.database_url is None
    assert s.embedded_dir == tmp_path.resolve() / "pg"
    assert load_settings({"DATABASE_URL": "postgresql://a/b"}).database_url == "postgresql://a/b"
    both = load_settings(
        {"DATABASE_URL": "postgresql://a/b", "CASEBASE_DATABASE_URL": "postgresql://c/d"}
    )
    assert both.database_url == "postgresql://c/d"


def test_bad_number_is_a_config_error():
    with pytest.raises(ConfigError, match="CASEBASE_STATEMENT_TIMEOUT_MS must be a whole number"):
        load_settings({"CASEBASE_STATEMENT_TIMEOUT_MS": "soon"})
    with pytest.raises(ConfigError, match="CASEBASE_MAX_K must be positive"):
        load_settings({"CASEBASE_MAX_K": "0"})
