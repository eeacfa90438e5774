"""The profile registry."""

from __future__ import annotations

import pytest

from genqlib.paper.profiles import Profile, get_profile, list_profiles


@pytest.fixture(autouse=True)
def smoke_world_in_tmp(tmp_path_factory, monkeypatch):
    """paper-smoke builds its world on first use: keep it out of the checkout."""
    monkeypatch.setenv("GENQ_SMOKE_DIR", str(tmp_path_factory.getbasetemp() / "smoke-world"))


def test_registry_names():
    assert list_profiles() == ["ci", "mini", "paper", "paper-smoke"]
    assert all(isinstance(get_profile(n), Profile) and get_profile(n).name == n for n in list_profiles())


def test_unknown_profile_lists_choices():
    with pytest.raises(ValueError, match=r"unknown profile 'laptop'.*'ci', 'mini', 'paper', 'paper-smoke'"):
        get_profile("laptop")


def test_overrides_and_unknown_fields():
    p = get_profile("mini", calib_size=256)
    assert p.calib_size == 256 and get_profile("mini").calib_size != 256
    with pytest.raises(ValueError, match="calib_sz"):
        get_profile("mini", calib_sz=256)


def test_offline_profiles_never_download_and_ci_is_smallest():
    ci, mini, paper, smoke = (get_profile(n) for n in list_profiles())
    assert not ci.allow_download and not mini.allow_download and paper.allow_download
    assert not smoke.allow_download and smoke.dataset == paper.dataset == "imagenet"
    assert ci.eval_size is not None and mini.eval_size is None
    assert ci.n_per_class < mini.n_per_class and ci.recon_iters < mini.recon_iters <= paper.recon_iters


def test_only_mini_writes_into_the_figures_the_readme_quotes():
    mini = get_profile("mini").figures_dir
    assert mini.name == "figures"
    for name in ("ci", "paper", "paper-smoke"):
        assert get_profile(name).figures_dir == mini / name
